//! The trainer: a validated [`RunConfig`] in, a run directory ([`RunDir`]) out.
//!
//! [`run_on`] drives a [`Cluster`](crate::parallel::Cluster) (the nodes as threads of this process, sequentially, or on MPI
//! ranks) epoch by epoch: a segment of training steps, then on the leader evaluation, a metrics line
//! and an atomic checkpoint. It decides once whether a run starts afresh or resumes ([`RunDir`] owns
//! that decision and the files), and logs every decision with `tracing` (the command line writes
//! those events to the run's `train.log`).
//!
//! What one invocation does with its run ([`Invocation`]: resume or start, a step limit for this
//! invocation, a stop request) is not part of the run's config, and how it ended is an [`Outcome`]:
//! finished, already finished, stopped at its step limit, or interrupted (the checkpoint then holds
//! the step reached, and `--resume` continues from it exactly).
//!
//! Map: [`config`] (what defines a run), [`metrics`] (what it records), [`run_dir`] (where, and its
//! lock), [`trace`] (the timeline of an epoch's last steps), `session.rs` (one invocation: open the
//! run, the epoch loop, the summary).

pub mod config;
mod divergence;
mod lock;
pub mod metrics;
pub mod run_dir;
mod session;
pub mod trace;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use thiserror::Error;
use tracing::info;

use crate::checkpoint::{CheckpointError, Progress};
use crate::data::{self, DataError};
use crate::device::{self, DeviceError};
use crate::local::{Network, StepStats};
use crate::parallel::{Local, Runtime, RuntimeError};
use crate::plan::{Plan, PlanError};
pub use config::{ConfigError, RunConfig};
pub use metrics::{EpochMetrics, Summary, UnitMetrics};
pub use run_dir::{RunDir, RunDirError, RunState};
pub use session::run_on;
pub use trace::TraceFile;

/// Why a run failed.
#[derive(Debug, Error)]
pub enum TrainError {
    /// Data could not be read.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The plan is impossible.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A checkpoint could not be read or written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The device is unavailable.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// An invalid setting.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A run-directory file could not be written or read, or the directory cannot take this run.
    #[error(transparent)]
    RunDir(#[from] RunDirError),
    /// A node failed, or the parallel runtime could not run.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Training diverged: a loss is not finite.
    #[error("training diverged at epoch {epoch}, step {step}: {loss} is {value}; {hint}")]
    Diverged {
        /// Epoch.
        epoch: usize,
        /// Step in the epoch.
        step: usize,
        /// Which loss, in words (`the cross-entropy of m1.g0`).
        loss: String,
        /// Its value.
        value: f64,
        /// The setting most likely at fault, with its value, and what to try.
        hint: String,
    },
}

/// What the trainer reports while it runs (for progress bars and logs).
#[derive(Debug)]
pub enum Event<'a> {
    /// An epoch starts.
    EpochStart {
        /// Epoch (1-based).
        epoch: usize,
        /// Batches it will run.
        steps: usize,
        /// Its learning rate.
        lr: f64,
    },
    /// A step ended.
    Step {
        /// Step in the epoch (1-based).
        step: usize,
        /// Its statistics.
        stats: &'a StepStats,
        /// Training images per second so far this epoch.
        images_per_second: f64,
    },
    /// Evaluation starts.
    Evaluating,
    /// An epoch ended (metrics already written).
    EpochEnd(&'a EpochMetrics),
}

/// Data, plan and network of a config, ready to train or evaluate.
pub struct Prepared {
    /// The data splits.
    pub splits: data::Splits,
    /// The validated plan.
    pub plan: Plan,
    /// The network (fresh init from `config.seed`).
    pub net: Network,
    /// The device.
    pub device: tch::Device,
}

/// Loads the data, validates the plan and builds the network of `config`.
pub fn prepare(config: &RunConfig) -> Result<Prepared, TrainError> {
    config.validate()?;
    let device = device::resolve(config.device)?;
    if config.threads > 0 {
        device::set_intra_op_threads(config.threads);
    }
    let splits = data::load(&config.data)?;
    let (c, h, w) = splits.train.shape();
    if h != w {
        return Err(ConfigError(format!(
            "images are {h}x{w}; the ResNets here need square images"
        ))
        .into());
    }
    info!(
        "data: {} training and {} test images of {c}x{h}x{w}, {} classes",
        splits.train.len(),
        splits.test.len(),
        splits.train.classes()
    );
    let arch = config.arch(c, h, splits.train.classes());
    let plan = config.build_plan(arch)?;
    // libtorch's generator is global: hold a lock so that runs started at the same time in one
    // process (tests, sweeps) each get exactly the weights of their seed.
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let mut net = {
        let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(config.seed as i64);
        Network::new(&plan, config.loss, config.sgd, device)
    };
    let norm = &splits.test_transform;
    net.set_pixel_scale(&norm.mean, &norm.std);
    Ok(Prepared {
        splits,
        plan,
        net,
        device,
    })
}

/// What one invocation of the trainer does with its run. None of it is part of the run's config
/// (`config.json`): a run is the same run however many invocations it takes to train it.
#[derive(Clone, Debug, Default)]
pub struct Invocation {
    /// Continue the run from its checkpoint instead of starting it (the config must be the run's
    /// own; only the data's location may differ, for a dataset that moved).
    pub resume: bool,
    /// Train at most this many steps in this invocation, counted from where the run stands
    /// (`--max-steps`). The run stays resumable: it is finished only when it reaches its last
    /// epoch.
    pub max_steps: Option<usize>,
    /// A request to stop, read by the leader before each step: once set, no new step starts, the
    /// steps already started finish, the checkpoint is written at the last of them and the run ends
    /// with [`Outcome::Interrupted`]. The library installs no signal handler; the command line sets
    /// this on SIGINT and SIGTERM.
    pub stop: Option<Arc<AtomicBool>>,
}

impl Invocation {
    /// A fresh start (`resume: false`) or a resume, with no step limit and no stop request.
    pub fn new(resume: bool) -> Self {
        Invocation {
            resume,
            ..Invocation::default()
        }
    }

    /// Checks the step limit.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_steps == Some(0) {
            return Err(ConfigError(
                "--max-steps 0 must be at least 1 (steps to train in this invocation)".into(),
            ));
        }
        Ok(())
    }
}

/// How an invocation of the trainer ended, when nothing failed.
#[derive(Debug)]
pub enum Outcome {
    /// The run reached its last epoch: evaluated, `summary.json` written.
    Finished(Summary),
    /// `--resume` of a run that had finished before: nothing was trained or written; its summary.
    AlreadyFinished(Summary),
    /// This invocation trained its `max_steps`; the checkpoint stands here and the run resumes.
    StepLimit(Progress),
    /// A stop request ended the run after the steps in flight; the checkpoint stands here (written
    /// at once, or already there when no step ran) and the run resumes from it exactly.
    Interrupted(Progress),
    /// An MPI rank other than the leader did its part of a run that finished (the leader reports).
    Follower,
}

impl Outcome {
    /// The run's summary when it is finished (on the leader).
    pub fn summary(&self) -> Option<&Summary> {
        match self {
            Outcome::Finished(s) | Outcome::AlreadyFinished(s) => Some(s),
            _ => None,
        }
    }

    /// [`Outcome::summary`], by value.
    pub fn into_summary(self) -> Option<Summary> {
        match self {
            Outcome::Finished(s) | Outcome::AlreadyFinished(s) => Some(s),
            _ => None,
        }
    }
}

/// Trains `config` in `run_dir` (created if needed, and locked while the run trains) with every node
/// as a pipelined thread, as `invocation` says.
pub fn run(
    config: &RunConfig,
    run_dir: &Path,
    invocation: &Invocation,
    observer: &mut dyn FnMut(Event),
) -> Result<Outcome, TrainError> {
    run_on(
        &mut Local::new(Runtime::default()),
        config,
        &RunDir::new(run_dir),
        invocation,
        observer,
    )
}
