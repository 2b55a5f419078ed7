//! `trace.json`: a run's timeline. After each epoch on worker threads or MPI ranks, the leader writes
//! every node's compute in the epoch's last [`TRACE_STEPS`](crate::parallel::TRACE_STEPS) steps,
//! phase by phase, and where the nodes ran (replacing the previous epoch's): what `groupwise plan
//! --simulate PROFILE --trace RUN_DIR` draws beside the simulator's timeline of the same placement.
//!
//! Times are seconds from the first span, on the wall clock of the leader's machine (`SystemTime`):
//! ranks on one machine share it; ranks on other machines are as far off as their clocks are.

use serde::{Deserialize, Serialize};

use crate::local::Phase;
use crate::parallel::{Interval, Topology, Trace};

/// One worker thread of the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceWorker {
    /// Its process (MPI rank; 0 for threads).
    pub process: usize,
    /// Its nodes, in node order.
    pub nodes: Vec<String>,
    /// Their forward MACs per image (what tells another architecture or input shape apart).
    pub macs: Vec<u64>,
}

/// One stretch of a node's compute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceSpan {
    /// Row in [`TraceFile::workers`].
    pub worker: usize,
    /// The node (`m1.g0`, `head`).
    pub node: String,
    /// `trunk`, `classifier`, `loss + backward` or `update` ([`Phase::name`]).
    pub phase: String,
    /// The global step (1-based).
    pub step: usize,
    /// Seconds from the first span.
    pub start: f64,
    /// Seconds from the first span.
    pub end: f64,
}

/// The file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceFile {
    /// The epoch traced.
    pub epoch: usize,
    /// Steps of that epoch's segment (the pipeline filled at its first and drained after its last).
    pub steps: usize,
    /// Images per step.
    pub batch_size: usize,
    /// `threads` or `mpi:<ranks>`.
    pub runtime: String,
    /// libtorch intra-op threads of each worker.
    pub threads_per_worker: usize,
    /// Messages in flight per channel.
    pub pipeline_depth: usize,
    /// Cores of the leader's machine (absent in files written before it was recorded).
    #[serde(default)]
    pub cores: Option<usize>,
    /// Every worker, over every process in rank order.
    pub workers: Vec<TraceWorker>,
    /// The compute, in order of start.
    pub spans: Vec<TraceSpan>,
}

impl TraceFile {
    /// The file for `trace` of `topo`'s nodes (an epoch of `steps` steps of `batch_size` images on
    /// `runtime`).
    pub fn new(
        topo: &Topology,
        trace: &Trace,
        (epoch, steps, batch_size): (usize, usize, usize),
        runtime: String,
    ) -> TraceFile {
        let name = |id: usize| topo.name(id).to_string();
        TraceFile {
            epoch,
            steps,
            batch_size,
            runtime,
            threads_per_worker: trace.threads_per_worker,
            pipeline_depth: trace.depth,
            cores: Some(crate::parallel::cores()),
            workers: trace
                .workers
                .iter()
                .map(|(process, ids)| TraceWorker {
                    process: *process,
                    nodes: ids.iter().map(|&id| name(id)).collect(),
                    macs: ids.iter().map(|&id| topo.macs(id)).collect(),
                })
                .collect(),
            spans: trace
                .intervals
                .iter()
                .map(|i| TraceSpan {
                    worker: i.worker,
                    node: name(i.node),
                    phase: i.phase.name().to_string(),
                    step: i.step,
                    start: i.start,
                    end: i.end,
                })
                .collect(),
        }
    }

    /// Back to [`Trace`] over `topo`; an error says what does not fit (a node `topo` lacks or has
    /// with other MACs, a worker out of range, an unknown phase, a node on no worker or on two).
    pub fn trace(&self, topo: &Topology) -> Result<Trace, String> {
        let id = |name: &str| -> Result<usize, String> {
            name.parse()
                .ok()
                .and_then(|n| topo.find(n))
                .ok_or_else(|| format!("node '{name}' is not a node of this plan"))
        };
        let mut placed = vec![0usize; topo.len()];
        let mut workers = Vec::with_capacity(self.workers.len());
        for w in &self.workers {
            let ids = w
                .nodes
                .iter()
                .map(|n| id(n))
                .collect::<Result<Vec<_>, _>>()?;
            for (&i, &macs) in ids.iter().zip(&w.macs) {
                if macs != topo.macs(i) {
                    return Err(format!(
                        "node {} of the run has {macs} forward MACs per image, this plan's {}: \
                         another architecture or input shape (give the run's model flags)",
                        topo.name(i),
                        topo.macs(i)
                    ));
                }
            }
            for &i in &ids {
                placed[i] += 1;
            }
            workers.push((w.process, ids));
        }
        if let Some(i) = placed.iter().position(|&n| n != 1) {
            return Err(format!(
                "node {} is on {} workers, not one: the trace is of another plan",
                topo.name(i),
                placed[i]
            ));
        }
        let intervals = self
            .spans
            .iter()
            .map(|s| {
                if s.worker >= workers.len() {
                    return Err(format!(
                        "a span of node {} is on worker {}, of {}",
                        s.node,
                        s.worker,
                        workers.len()
                    ));
                }
                let phase = *Phase::ALL
                    .iter()
                    .find(|p| p.name() == s.phase)
                    .ok_or_else(|| format!("unknown phase '{}'", s.phase))?;
                Ok(Interval {
                    worker: s.worker,
                    node: id(&s.node)?,
                    phase,
                    step: s.step,
                    start: s.start,
                    end: s.end,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Trace {
            workers,
            threads_per_worker: self.threads_per_worker,
            depth: self.pipeline_depth,
            intervals,
        })
    }
}
