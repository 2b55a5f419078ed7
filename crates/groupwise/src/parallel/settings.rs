//! How the nodes run ([`Runtime`]): settings that never change what is computed, so they may change
//! between resumes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tch::Device;

use super::segment::RuntimeError;
use crate::plan::NodeId;

/// How the nodes run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Workers {
    /// One node after the other in the calling thread (the reference schedule).
    Sequential,
    /// Pipelined worker threads, each running a contiguous run of nodes (see [`Placement`]).
    #[default]
    Threads,
}

/// What nodes are balanced by when they are cut into contiguous runs, one per worker thread (and, under
/// MPI, one per rank).
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Placement {
    /// The plan's forward MACs per node.
    Macs,
    /// Each node's compute time, measured in the run's first steps when some worker runs several nodes
    /// (run on one worker thread, nodes in turn; these steps train like any other). Where the nodes
    /// cannot move after the start (MPI ranks) the MACs place them.
    #[default]
    Measured,
    /// Given seconds per step of every node (`groupwise plan --profile --json`).
    Given(Vec<(NodeId, f64)>),
}

/// A fault to inject, for tests of the failure path: node `node` fails when it reaches global step
/// `step` (1-based). Written `<node>@<step>`, e.g. `m1.g0@5`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The node that fails.
    pub node: NodeId,
    /// The global step at which it fails.
    pub step: usize,
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        let bad = || format!("fault spec '{spec}': expected <node>@<step>, e.g. m0.g1@3");
        let (node, step) = spec.split_once('@').ok_or_else(bad)?;
        Ok(Fault {
            node: node
                .parse()
                .map_err(|e| format!("fault spec '{spec}': {e}"))?,
            step: step.parse().map_err(|_| bad())?,
        })
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.node, self.step)
    }
}

/// Runtime settings: how to run, not what to compute (they may change between resumes).
#[derive(Clone, Debug, PartialEq)]
pub struct Runtime {
    /// Sequential or pipelined workers.
    pub workers: Workers,
    /// Worker threads of each process (`None`: one per node, or one per GPU with `devices`; never more
    /// than its nodes).
    pub worker_threads: Option<usize>,
    /// What the nodes are balanced by across workers.
    pub placement: Placement,
    /// libtorch intra-op threads per worker (`None`: cores / workers, at least 1); for the sequential
    /// path, of the calling thread while it trains (`None`: the caller's own).
    pub threads_per_worker: Option<usize>,
    /// Messages in flight per channel (back-pressure); 2 is double buffering.
    pub pipeline_depth: usize,
    /// Devices that nodes are placed on, round-robin in node order (empty: the run's device).
    pub devices: Vec<usize>,
    /// A node to fail on purpose (tests of the failure path), on every path.
    pub fault: Option<Fault>,
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime {
            workers: Workers::Threads,
            worker_threads: None,
            placement: Placement::default(),
            threads_per_worker: None,
            pipeline_depth: 2,
            devices: Vec::new(),
            fault: None,
        }
    }
}

impl Runtime {
    /// The sequential path.
    pub fn sequential() -> Self {
        Runtime {
            workers: Workers::Sequential,
            ..Runtime::default()
        }
    }

    /// Checks these settings for a run on `device` (the run's device): threads per worker within
    /// [`max_threads`], a pipeline depth within [`MAX_PIPELINE_DEPTH`], and `devices` only where
    /// they are used (pipelined workers on CUDA) and, once libtorch has loaded CUDA, only GPUs that
    /// exist. [`Layout::new`](super::Layout::new) calls it, so every cluster runs checked settings; the command line
    /// calls it as soon as it knows the run's device.
    pub fn validate(&self, device: Device) -> Result<(), RuntimeError> {
        let bad = |m: String| Err(RuntimeError::Failed(m));
        if let Some(t) = self.threads_per_worker {
            check_threads("--threads-per-worker", t, 1).map_err(RuntimeError::Failed)?;
        }
        if let Some(t) = self.worker_threads {
            check_threads("--worker-threads", t, 1).map_err(RuntimeError::Failed)?;
        }
        if let Placement::Given(costs) = &self.placement {
            if let Some((node, c)) = costs.iter().find(|(_, c)| !(c.is_finite() && *c >= 0.0)) {
                return bad(format!(
                    "the node costs give {node} {c} seconds per step; costs must be finite and \
                     not negative"
                ));
            }
        }
        if !(1..=MAX_PIPELINE_DEPTH).contains(&self.pipeline_depth) {
            return bad(format!(
                "--pipeline-depth {} must be between 1 and {MAX_PIPELINE_DEPTH} (messages in flight \
                 per link, each a batch of activations; 2 is double buffering)",
                self.pipeline_depth
            ));
        }
        if self.devices.is_empty() {
            return Ok(());
        }
        let list = self
            .devices
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",");
        if !device.is_cuda() {
            return bad(format!(
                "--devices {list} places nodes on GPUs and needs --device cuda (this run is on \
                 the CPU)"
            ));
        }
        if self.workers == Workers::Sequential {
            return bad(format!(
                "--devices {list} places worker threads; --workers sequential runs every node on \
                 the run's device (drop one of them)"
            ));
        }
        // 0 until libtorch's CUDA library is loaded (`device::resolve`): then only Layout::new,
        // which runs after it, can check.
        let count = usize::try_from(tch::Cuda::device_count()).unwrap_or(0);
        if let Some(d) = self.devices.iter().find(|&&d| count > 0 && d >= count) {
            return bad(format!(
                "--devices {list}: there is no GPU {d}; this machine has {count} (0 to {})",
                count - 1
            ));
        }
        Ok(())
    }
}

/// The deepest pipeline `--pipeline-depth` allows. Every message in flight holds a batch of
/// activations and its channel is allocated for the full depth; 2 already overlaps each send with
/// the next step, and a few more absorb uneven node times: beyond this, memory grows for nothing.
pub const MAX_PIPELINE_DEPTH: usize = 64;

/// Threads per core of this machine that one thread setting (`--threads`, `--threads-per-worker`,
/// `--loader-workers`) may ask for. More threads than cores only add switching; a few times more
/// leaves room for deliberate oversubscription, while `--threads 100000` would swamp the machine.
pub const THREADS_PER_CORE: usize = 4;

/// Cores of this machine (`available_parallelism`, 1 when unknown).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The most threads one thread setting may ask for on this machine: [`THREADS_PER_CORE`] per core.
pub fn max_threads() -> usize {
    THREADS_PER_CORE * cores()
}

/// Checks the thread setting `flag` = `n` against `min..=`[`max_threads`]; the message names the
/// flag, the value, the range and this machine's cores.
pub fn check_threads(flag: &str, n: usize, min: usize) -> Result<(), String> {
    let max = max_threads();
    if (min..=max).contains(&n) {
        return Ok(());
    }
    Err(format!(
        "{flag} {n} must be between {min} and {max} ({THREADS_PER_CORE} per core; this machine \
         has {} cores)",
        cores()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    type Mutation = fn(&mut Runtime);

    /// One row per rule: the setting, the run's device, and a fragment of the one-line message.
    const INVALID: &[(&str, Mutation, Device, &str)] = &[
        (
            "no intra-op thread",
            |r| r.threads_per_worker = Some(0),
            Device::Cpu,
            "--threads-per-worker 0 must be between 1 and ",
        ),
        (
            "threads beyond the machine",
            |r| r.threads_per_worker = Some(100_000),
            Device::Cpu,
            "--threads-per-worker 100000 must be between 1 and ",
        ),
        (
            "no worker thread",
            |r| r.worker_threads = Some(0),
            Device::Cpu,
            "--worker-threads 0 must be between 1 and ",
        ),
        (
            "a negative node cost",
            |r| r.placement = Placement::Given(vec![(NodeId::Head, -1.0)]),
            Device::Cpu,
            "the node costs give head -1 seconds per step",
        ),
        (
            "no pipeline",
            |r| r.pipeline_depth = 0,
            Device::Cpu,
            "--pipeline-depth 0 must be between 1 and 64",
        ),
        (
            "a pipeline that fills memory",
            |r| r.pipeline_depth = 100_000_000,
            Device::Cpu,
            "--pipeline-depth 100000000 must be between 1 and 64",
        ),
        (
            "GPUs on a CPU run",
            |r| r.devices = vec![0, 1],
            Device::Cpu,
            "--devices 0,1 places nodes on GPUs and needs --device cuda",
        ),
        (
            "GPUs for the sequential path",
            |r| {
                r.workers = Workers::Sequential;
                r.devices = vec![0];
            },
            Device::Cuda(0),
            "--devices 0 places worker threads; --workers sequential",
        ),
    ];

    /// Edge values that must pass.
    const VALID: &[(&str, Mutation, Device)] = &[
        ("the defaults", |_| {}, Device::Cpu),
        (
            "the sequential path",
            |r| *r = Runtime::sequential(),
            Device::Cpu,
        ),
        (
            "the shallowest pipeline",
            |r| r.pipeline_depth = 1,
            Device::Cpu,
        ),
        (
            "the deepest pipeline",
            |r| r.pipeline_depth = MAX_PIPELINE_DEPTH,
            Device::Cpu,
        ),
        (
            "one thread",
            |r| r.threads_per_worker = Some(1),
            Device::Cpu,
        ),
        (
            "the most threads",
            |r| r.threads_per_worker = Some(max_threads()),
            Device::Cpu,
        ),
        (
            "GPUs for workers",
            |r| r.devices = vec![0, 1],
            Device::Cuda(0),
        ),
    ];

    #[test]
    fn invalid_runtime_settings_name_the_flag_value_and_range() {
        for (name, mutate, device, want) in INVALID {
            let mut r = Runtime::default();
            mutate(&mut r);
            let m = r.validate(*device).expect_err(name).to_string();
            assert!(
                m.contains(want) && !m.contains('\n'),
                "{name}: `{m}` lacks `{want}`"
            );
        }
        for (name, mutate, device) in VALID {
            let mut r = Runtime::default();
            mutate(&mut r);
            r.validate(*device)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
