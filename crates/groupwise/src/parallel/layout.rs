//! [`Layout`]: where every node of a run executes, decided by one function for plans, threads and MPI
//! alike ([`balanced_boundaries`]).

use tch::Device;

use crate::plan::{balanced_boundaries, Plan};

use super::segment::RuntimeError;
use super::settings::{cores, Fault, Placement, Runtime};
use super::topology::Topology;
use super::transport::{Channel, Kind};

/// Where every node runs, for one run: its process (rank), its worker thread in that process and its
/// device, the intra-op threads of each worker of this process, the pipeline depth and an injected
/// fault.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The node graph.
    pub topo: Topology,
    /// Rank of every node (all 0 in one process).
    pub ranks: Vec<usize>,
    /// Worker thread of every node within its process (0-based; nodes of a worker are contiguous).
    pub workers: Vec<usize>,
    /// Device of every node.
    pub devices: Vec<Device>,
    /// GPUs the workers go to (`--devices`; empty: every node on the run's device).
    gpus: Vec<usize>,
    /// This process's rank.
    pub rank: usize,
    /// libtorch intra-op threads of each worker of this process.
    pub threads_per_worker: usize,
    /// Messages in flight per channel.
    pub depth: usize,
    /// `(node, global step)` to fail at (fault injection).
    pub fault: Option<(usize, usize)>,
    /// What the nodes were balanced by, and every node's cost in it.
    pub costs: NodeCosts,
}

/// Every node's cost as the placement weighs it, and what it is.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeCosts {
    /// `per_node[id]`: forward MACs per image, or seconds per step.
    pub per_node: Vec<f64>,
    /// What the numbers are (for the log).
    pub source: String,
    /// Whether they are seconds per step (else MACs).
    pub seconds: bool,
}

impl NodeCosts {
    /// Forward MACs per image of every node.
    pub fn macs(topo: &Topology) -> NodeCosts {
        NodeCosts {
            per_node: (0..topo.len()).map(|id| topo.macs(id) as f64).collect(),
            source: "forward MACs".into(),
            seconds: false,
        }
    }

    /// Measured or given seconds per step.
    pub fn seconds(per_node: Vec<f64>, source: impl Into<String>) -> NodeCosts {
        NodeCosts {
            per_node,
            source: source.into(),
            seconds: true,
        }
    }

    /// The costs `placement` names (measured costs are not known yet at the start: MACs stand in).
    fn of(placement: &Placement, topo: &Topology) -> Result<NodeCosts, RuntimeError> {
        let Placement::Given(given) = placement else {
            return Ok(NodeCosts::macs(topo));
        };
        let per_node = (0..topo.len())
            .map(|id| {
                let name = topo.name(id);
                given
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, c)| *c)
                    .ok_or_else(|| {
                        RuntimeError::Failed(format!(
                            "the node costs have no entry for node {name}: profile this plan \
                             (groupwise plan --profile --json with the run's settings)"
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(NodeCosts::seconds(per_node, "given seconds per step"))
    }
}

/// Cuts `ids` (contiguous, in node order) into at most `parts` contiguous runs balancing `costs`; returns
/// the run of each id. The one placement rule: it is the rule that cuts plans into modules.
pub fn cut(ids: &[usize], costs: &[f64], parts: usize) -> Vec<usize> {
    let parts = parts.clamp(1, ids.len().max(1));
    if ids.is_empty() {
        return Vec::new();
    }
    // A zero-cost node would let the rule put all of them anywhere: give every node a floor.
    let total: f64 = ids.iter().map(|&id| costs[id]).sum();
    let floor = total.max(1.0) * 1e-9;
    let weights: Vec<f64> = ids.iter().map(|&id| costs[id].max(floor)).collect();
    let ends = balanced_boundaries(&weights, parts);
    (0..ids.len())
        .map(|i| ends.iter().take_while(|&&end| end < i).count())
        .collect()
}

impl Layout {
    /// The layout of `plan` over `processes` processes (1 for threads), this one being `rank`, with
    /// `processes_here` of them on this machine (they share its cores). Nodes in id order are cut into
    /// contiguous runs balancing the placement's costs ([`balanced_boundaries`], the rule that also cuts
    /// plans), one per process, and each process's run again into one per worker thread (by default
    /// one per core of its share of the machine, or one per GPU of `runtime.devices`); GPUs are given
    /// round-robin by worker.
    pub fn new(
        plan: &Plan,
        runtime: &Runtime,
        base: Device,
        processes: usize,
        rank: usize,
        processes_here: usize,
    ) -> Result<Layout, RuntimeError> {
        runtime.validate(base)?;
        let topo = Topology::new(plan);
        let n = topo.len();
        if processes == 0 || processes > n {
            return Err(RuntimeError::Failed(format!(
                "{processes} MPI ranks but this plan has {n} nodes; run with 1 to {n} ranks \
                 (mpirun -np {n})"
            )));
        }
        let costs = NodeCosts::of(&runtime.placement, &topo)?;
        let all: Vec<usize> = (0..n).collect();
        let ranks = cut(&all, &costs.per_node, processes);
        // By default a worker per node, or one per GPU when nodes go to GPUs. More workers than cores
        // on purpose: the kernel's scheduler then keeps every core busy with whichever node is ready,
        // which a contiguous cut of lumpy node costs cannot match, and no step is spent measuring
        // (ResNet-32 on 2 cores, 24-step runs: DGL K=4 0.32-0.33 s per step with a thread per node,
        // 0.387 s with two workers cut by measured time; G=4 K=4 about the same either way;
        // scripts/bench_default_runtime.sh).
        // Every process's worker threads (each process decides its own; every process computes
        // everyone's, so the leader knows where each node runs).
        let workers_for = |nodes: usize| {
            let share = match runtime.devices.len() {
                0 => nodes,
                gpus => gpus,
            };
            runtime
                .worker_threads
                .unwrap_or(share)
                .clamp(1, nodes.max(1))
        };
        let counts: Vec<usize> = (0..processes)
            .map(|r| workers_for(ranks.iter().filter(|&&x| x == r).count()))
            .collect();
        let worker_threads = counts[rank];
        let threads_per_worker = runtime
            .threads_per_worker
            .unwrap_or_else(|| default_threads_per_worker(worker_threads * processes_here.max(1)));
        let fault = resolve_fault(&topo, runtime.fault)?;
        let mut layout = Layout {
            topo,
            ranks,
            workers: vec![0; n],
            devices: vec![base; n],
            gpus: runtime.devices.clone(),
            rank,
            threads_per_worker,
            depth: runtime.pipeline_depth,
            fault,
            costs,
        };
        layout.cut_workers(&counts);
        Ok(layout)
    }

    /// Cuts process r's nodes into `counts[r]` worker threads (at most one per node) by the costs, and
    /// gives the GPUs round-robin by worker, counted across processes in rank order.
    fn cut_workers(&mut self, counts: &[usize]) {
        let mut offset = 0;
        for (r, &count) in counts.iter().enumerate().take(self.processes()) {
            let ids = self.nodes_of(r);
            for (&id, w) in ids.iter().zip(cut(&ids, &self.costs.per_node, count)) {
                self.workers[id] = w;
                if !self.gpus.is_empty() {
                    self.devices[id] = Device::Cuda(self.gpus[(offset + w) % self.gpus.len()]);
                }
            }
            offset += self.workers_of(&ids);
        }
    }

    /// The same layout with this process's nodes re-balanced over its worker threads by `costs` (the
    /// ranks stay: nodes do not move between processes once started).
    pub fn rebalanced(&self, costs: NodeCosts) -> Layout {
        let counts: Vec<usize> = (0..self.processes())
            .map(|r| self.workers_of(&self.nodes_of(r)))
            .collect();
        let mut layout = Layout {
            costs,
            ..self.clone()
        };
        layout.cut_workers(&counts);
        layout
    }

    /// The same layout with every node of this process on one worker thread, in node order (the
    /// sequential schedule through the workers' code: how [`Layout::rebalanced`]'s costs and
    /// `groupwise plan --profile` are measured).
    pub fn single_worker(&self) -> Layout {
        Layout {
            workers: vec![0; self.topo.len()],
            ..self.clone()
        }
    }

    fn processes(&self) -> usize {
        self.ranks.iter().max().map_or(1, |r| r + 1)
    }

    /// The nodes of process `rank`, in node order.
    fn nodes_of(&self, rank: usize) -> Vec<usize> {
        (0..self.topo.len())
            .filter(|&id| self.ranks[id] == rank)
            .collect()
    }

    /// Worker threads that run the nodes `ids` of one process (at least 1).
    fn workers_of(&self, ids: &[usize]) -> usize {
        ids.iter()
            .map(|&id| self.workers[id] + 1)
            .max()
            .unwrap_or(1)
    }

    /// Worker threads of this process.
    pub fn worker_count(&self) -> usize {
        self.workers_of(&self.local())
    }

    /// The nodes of this process.
    pub fn local(&self) -> Vec<usize> {
        self.nodes_of(self.rank)
    }

    /// The nodes of this process by worker thread, each in node order.
    pub fn local_workers(&self) -> Vec<Vec<usize>> {
        self.workers_in(self.rank)
    }

    /// Every worker thread of every process, in rank order: its process and its nodes (in node
    /// order). A worker's index here is its row in a run's trace and in the simulator's `Setup`.
    pub fn all_workers(&self) -> Vec<(usize, Vec<usize>)> {
        (0..self.processes())
            .flat_map(|rank| {
                self.workers_in(rank)
                    .into_iter()
                    .map(move |ids| (rank, ids))
            })
            .collect()
    }

    /// The nodes of process `rank` by worker thread, each in node order.
    fn workers_in(&self, rank: usize) -> Vec<Vec<usize>> {
        let ids = self.nodes_of(rank);
        let mut out: Vec<Vec<usize>> = vec![Vec::new(); self.workers_of(&ids)];
        for id in ids {
            out[self.workers[id]].push(id);
        }
        out
    }

    /// The channel on which the leader tells process `rank`'s feeder whether to feed each step
    /// ([`Kind::Feed`]), addressed to the first node of that process; `None` for the leader itself and
    /// for a process without nodes.
    pub fn feed_channel(&self, rank: usize) -> Option<Channel> {
        if rank == 0 {
            return None;
        }
        let first = *self.nodes_of(rank).first()?;
        Some(Channel::new(self.topo.collector(), first, Kind::Feed))
    }

    /// Every process's [`Layout::feed_channel`] (none in one process).
    pub fn feed_channels(&self) -> Vec<Channel> {
        (1..self.processes())
            .filter_map(|r| self.feed_channel(r))
            .collect()
    }

    /// In words: which nodes run where, with how many threads, balanced by what.
    pub fn describe(&self) -> String {
        let processes = self.processes();
        let unit = |c: f64| {
            if self.costs.seconds {
                format!("{:.1} ms", c * 1e3)
            } else {
                format!("{:.3e} MACs", c)
            }
        };
        let mut parts = Vec::new();
        for r in 0..processes {
            let ids = self.nodes_of(r);
            let runs: Vec<String> = (0..self.workers_of(&ids))
                .map(|w| {
                    let mine: Vec<usize> = ids
                        .iter()
                        .copied()
                        .filter(|&id| self.workers[id] == w)
                        .collect();
                    let names: Vec<String> = mine
                        .iter()
                        .map(|&id| self.topo.name(id).to_string())
                        .collect();
                    let load: f64 = mine.iter().map(|&id| self.costs.per_node[id]).sum();
                    format!("worker {w}: {} ({})", names.join(" "), unit(load))
                })
                .collect();
            let head = match processes {
                1 => String::new(),
                _ => format!("rank {r}: "),
            };
            parts.push(format!("{head}{}", runs.join("; ")));
        }
        format!(
            "{} nodes on {} worker thread(s) per process ({} intra-op thread(s) each, pipeline depth \
             {}), balanced by {}; {}",
            self.topo.len(),
            self.worker_count(),
            self.threads_per_worker,
            self.depth,
            self.costs.source,
            parts.join("; ")
        )
    }
}

/// `fault` as `(node id, global step)` in `topo`; an error listing the nodes when it names none of
/// them. One check for pipelined workers, MPI ranks and the sequential path.
pub(super) fn resolve_fault(
    topo: &Topology,
    fault: Option<Fault>,
) -> Result<Option<(usize, usize)>, RuntimeError> {
    let Some(f) = fault else { return Ok(None) };
    let id = topo.find(f.node).ok_or_else(|| {
        RuntimeError::Failed(format!(
            "fault spec {f}: no node {} (nodes: {})",
            f.node,
            (0..topo.len())
                .map(|i| topo.name(i).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    Ok(Some((id, f.step)))
}

/// Default intra-op threads per worker: the cores shared by the workers of this machine.
pub fn default_threads_per_worker(workers_here: usize) -> usize {
    (cores() / workers_here.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_balances_contiguous_runs_and_survives_zero_costs() {
        let ids: Vec<usize> = (0..5).collect();
        // One heavy node alone, the light ones together.
        assert_eq!(
            cut(&ids, &[1.0, 1.0, 1.0, 1.0, 4.0], 2),
            vec![0, 0, 0, 0, 1]
        );
        assert_eq!(
            cut(&ids, &[4.0, 1.0, 1.0, 1.0, 1.0], 2),
            vec![0, 1, 1, 1, 1]
        );
        // More parts than nodes: one node each.
        assert_eq!(cut(&ids[..2], &[1.0, 1.0], 8), vec![0, 1]);
        // Zero costs still give every part a node.
        assert_eq!(cut(&ids[..3], &[0.0, 0.0, 0.0], 3), vec![0, 1, 2]);
        assert!(cut(&[], &[], 3).is_empty());
    }

    #[test]
    fn every_process_sees_every_process_s_worker_threads() {
        use crate::model::Arch;
        use crate::plan::{AuxInput, Plan};
        // DGL K=2: m0.g0 | m1.g0 head on 2 ranks; by default a worker per node on each rank.
        let plan = Plan::new(Arch::resnet32(3, 32, 10), "2", 1, AuxInput::StopGradient).unwrap();
        let runtime = Runtime::default();
        let views: Vec<Layout> = (0..2)
            .map(|rank| Layout::new(&plan, &runtime, Device::Cpu, 2, rank, 2).unwrap())
            .collect();
        assert_eq!(views[0].workers, views[1].workers);
        assert_eq!(views[0].all_workers(), views[1].all_workers());
        assert_eq!(
            views[0].all_workers(),
            vec![(0, vec![0]), (1, vec![1]), (1, vec![2])]
        );
        assert_eq!(views[1].worker_count(), 2);
        assert_eq!(views[0].worker_count(), 1);
        // Measured costs re-cut each process's nodes over its own worker threads.
        let again = views[1].rebalanced(NodeCosts::seconds(vec![1.0, 1.0, 1.0], "test"));
        assert_eq!(again.all_workers(), views[1].all_workers());
    }
}
