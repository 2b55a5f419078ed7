//! [`Layout`]: where every node of a run executes, decided once per run by one function for threads
//! and MPI alike.

use tch::Device;

use crate::plan::{balanced_boundaries, Plan};

use super::segment::RuntimeError;
use super::settings::{cores, Runtime};
use super::topology::Topology;
use super::transport::{Channel, Kind};

/// Where every node runs, for one run: its process (rank) and device, the intra-op threads of the
/// workers of this process, the pipeline depth and an injected fault.
#[derive(Debug)]
pub struct Layout {
    /// The node graph.
    pub topo: Topology,
    /// Rank of every node (all 0 in one process).
    pub ranks: Vec<usize>,
    /// Device of every node.
    pub devices: Vec<Device>,
    /// This process's rank.
    pub rank: usize,
    /// libtorch intra-op threads of each worker of this process.
    pub threads_per_worker: usize,
    /// Messages in flight per channel.
    pub depth: usize,
    /// `(node, global step)` to fail at (fault injection).
    pub fault: Option<(usize, usize)>,
}

impl Layout {
    /// The layout of `plan` over `processes` processes (1 for threads), this one being `rank`, with
    /// `processes_here` of them on this machine (they share its cores). Nodes in id order are cut into
    /// contiguous runs balancing forward MACs, one per process ([`balanced_boundaries`], the rule that
    /// also cuts plans); devices are given round-robin over `runtime.devices` (CUDA) in node order.
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
        let macs: Vec<f64> = (0..n).map(|id| topo.macs(id) as f64).collect();
        let ends = balanced_boundaries(&macs, processes);
        let ranks: Vec<usize> = (0..n)
            .map(|id| ends.iter().take_while(|&&end| end < id).count())
            .collect();
        let devices = (0..n)
            .map(|id| match runtime.devices.as_slice() {
                [] => base,
                list => Device::Cuda(list[id % list.len()]),
            })
            .collect();
        let here = ranks.iter().filter(|&&r| r == rank).count();
        let threads_per_worker = runtime
            .threads_per_worker
            .unwrap_or_else(|| default_threads_per_worker(here * processes_here.max(1)));
        let fault = match runtime.fault {
            None => None,
            Some(f) => Some((
                topo.find(f.node).ok_or_else(|| {
                    RuntimeError::Failed(format!(
                        "fault spec {f}: no node {} (nodes: {})",
                        f.node,
                        (0..n)
                            .map(|i| topo.name(i).to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?,
                f.step,
            )),
        };
        Ok(Layout {
            topo,
            ranks,
            devices,
            rank,
            threads_per_worker,
            depth: runtime.pipeline_depth,
            fault,
        })
    }

    /// The nodes of this process.
    pub fn local(&self) -> Vec<usize> {
        (0..self.topo.len())
            .filter(|&id| self.ranks[id] == self.rank)
            .collect()
    }

    /// The channel on which the leader tells process `rank`'s feeder whether to feed each step
    /// ([`Kind::Feed`]), addressed to the first node of that process; `None` for the leader itself and
    /// for a process without nodes.
    pub fn feed_channel(&self, rank: usize) -> Option<Channel> {
        if rank == 0 {
            return None;
        }
        let first = (0..self.topo.len()).find(|&id| self.ranks[id] == rank)?;
        Some(Channel::new(self.topo.collector(), first, Kind::Feed))
    }

    /// Every process's [`Layout::feed_channel`] (none in one process).
    pub fn feed_channels(&self) -> Vec<Channel> {
        let processes = self.ranks.iter().max().map_or(1, |r| r + 1);
        (1..processes)
            .filter_map(|r| self.feed_channel(r))
            .collect()
    }

    /// In words: which nodes run where, with how many threads.
    pub fn describe(&self) -> String {
        let processes = self.ranks.iter().max().map_or(1, |r| r + 1);
        let runs: Vec<String> = (0..processes)
            .map(|r| {
                let names: Vec<String> = (0..self.topo.len())
                    .filter(|&id| self.ranks[id] == r)
                    .map(|id| self.topo.name(id).to_string())
                    .collect();
                match processes {
                    1 => format!("nodes {}", names.join(" ")),
                    _ => format!("rank {r}: {}", names.join(" ")),
                }
            })
            .collect();
        format!(
            "{} nodes as worker threads ({} intra-op thread(s) each, pipeline depth {}); {}",
            self.topo.len(),
            self.threads_per_worker,
            self.depth,
            runs.join("; ")
        )
    }
}

/// Default intra-op threads per worker: the cores shared by the workers of this machine.
pub fn default_threads_per_worker(workers_here: usize) -> usize {
    (cores() / workers_here.max(1)).max(1)
}
