//! The trainer: a validated [`RunConfig`] in, a run directory ([`RunDir`]) out.
//!
//! [`run_on`] drives a [`Cluster`] (the nodes as threads of this process, sequentially, or on MPI
//! ranks) epoch by epoch: a segment of training steps, then on the leader evaluation, a metrics line
//! and an atomic checkpoint. It decides once whether a run starts afresh or resumes ([`RunDir`] owns
//! that decision and the files), and logs every decision with `tracing` (the command line writes
//! those events to the run's `train.log`).
//!
//! Map: [`config`] (what defines a run), [`metrics`] (what it records), [`run_dir`] (where).

pub mod config;
mod lock;
pub mod metrics;
pub mod run_dir;

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use thiserror::Error;
use tracing::info;

use crate::checkpoint::{self, CheckpointError, Progress, Restore};
use crate::data::{self, DataError, Loader, LoaderConfig};
use crate::device::{self, DeviceError};
use crate::eval::evaluate;
use crate::local::{Network, StepStats};
use crate::parallel::{Cluster, Local, Runtime, RuntimeError, Segment};
use crate::plan::{Plan, PlanError};
pub use config::{ConfigError, RunConfig};
use metrics::Accumulator;
pub use metrics::{EpochMetrics, Summary, UnitMetrics};
pub use run_dir::{RunDir, RunDirError, RunState};

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
    /// Training diverged.
    #[error(
        "training diverged at epoch {epoch}, step {step}: a loss is {value} (try a smaller --lr)"
    )]
    Diverged {
        /// Epoch.
        epoch: usize,
        /// Step in the epoch.
        step: usize,
        /// The loss value.
        value: f64,
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
        tch::set_num_threads(config.threads as i32);
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

/// Trains `config` in `run_dir` (created if needed) with every node as a pipelined thread. With
/// `resume`, continues from the run's checkpoint exactly where it stopped (the config must be the
/// run's own).
pub fn run(
    config: &RunConfig,
    run_dir: &Path,
    resume: bool,
    observer: &mut dyn FnMut(Event),
) -> Result<Summary, TrainError> {
    let summary = run_on(
        &mut Local::new(Runtime::default()),
        config,
        run_dir,
        resume,
        observer,
    )?;
    Ok(summary.expect("a local run is its own leader"))
}

/// Opens the run directory for `config` (leader only): a fresh run writes its config and, with
/// `init_from`, starts from those weights; a resumed one checks that the config is the run's own
/// (only `max_steps` may change), loads the checkpoint and drops metrics lines past it.
fn open_run(
    config: &RunConfig,
    dir: &RunDir,
    resume: bool,
    net: &mut Network,
) -> Result<Progress, TrainError> {
    if !resume {
        dir.create()?;
        if dir.checkpoint_path().exists() {
            return Err(RunDirError::Occupied(dir.path().to_path_buf()).into());
        }
        dir.write_config(config)?;
        dir.keep_metrics_through(0)?;
        if let Some(init) = &config.init_from {
            checkpoint::load(net, init, Restore::Weights)?;
            info!("weights from {}", init.display());
        }
        info!("fresh run in {}", dir.path().display());
        return Ok(Progress::default());
    }
    // --max-steps is how far to go this time, not part of what the run is.
    let saved = dir.read_config()?;
    let identity = |c: &RunConfig| RunConfig {
        max_steps: None,
        ..c.clone()
    };
    let differ = run_dir::differing_settings(&identity(&saved), &identity(config));
    if !differ.is_empty() {
        return Err(ConfigError(format!(
            "--resume: the settings differ from {} ({}); resume with no other flags than \
             --max-steps",
            dir.file(RunDir::CONFIG).display(),
            differ.join(", ")
        ))
        .into());
    }
    if saved.max_steps != config.max_steps {
        dir.write_config(config)?;
    }
    let progress = checkpoint::load(net, &dir.checkpoint_path(), Restore::State)?;
    dir.keep_metrics_through(progress.epoch)?;
    info!(
        "resume {} after epoch {} step {}",
        dir.path().display(),
        progress.epoch,
        progress.step
    );
    Ok(progress)
}

/// [`run`] on a [`Cluster`]. Returns the summary on the leader, `None` on other ranks.
pub fn run_on(
    cluster: &mut dyn Cluster,
    config: &RunConfig,
    run_dir: &Path,
    resume: bool,
    observer: &mut dyn FnMut(Event),
) -> Result<Option<Summary>, TrainError> {
    let config = &share_config(cluster, config)?;
    let dir = RunDir::new(run_dir);
    let leader = cluster.leader();
    let started = Instant::now();
    let Prepared {
        splits,
        plan,
        mut net,
        device,
    } = prepare(config)?;
    // Other ranks never touch the run directory: the leader's state arrives in share_start.
    let mut progress = if leader {
        open_run(config, &dir, resume, &mut net)?
    } else {
        Progress::default()
    };
    cluster.share_start(&mut net, &mut progress)?;
    cluster.start(&plan, device)?;
    info!(
        "plan {}: {} boundaries x {} groups, {} nodes' MACs max {:.3e}; runtime {}: {}; \
         libtorch intra-op threads of the leader: {}",
        config.plan,
        plan.boundary_count(),
        plan.groups,
        plan.nodes().len(),
        plan.figure_max_node_macs() as f64,
        cluster.describe(),
        cluster.placement(),
        tch::get_num_threads()
    );

    let train = Arc::new(splits.train);
    let test = Arc::new(splits.test);
    let eval = |net: &Network| {
        evaluate(
            net,
            test.clone(),
            splits.test_transform.clone(),
            config.eval_batch_size,
            config.loader_workers,
            device,
        )
    };
    let steps_per_epoch = Loader::steps_for(train.len(), config.batch_size, false);
    let mut total_steps = progress.epoch * steps_per_epoch + progress.step;
    let (mut images_seen, mut train_time, mut train_steps) = (0usize, 0f64, 0usize);
    let mut last_eval = None;
    let lambda = config.loss.diversity_weight;

    for epoch in progress.epoch + 1..=config.epochs {
        let lr = config.schedule.lr(config.lr, epoch, config.epochs);
        let loader = Loader::new(
            train.clone(),
            splits.train_transform.clone(),
            &LoaderConfig {
                batch_size: config.batch_size,
                shuffle: config.shuffle,
                augment: config.augment,
                drop_last: false,
                seed: config.seed,
                epoch: epoch as u64,
                workers: config.loader_workers,
                prefetch: 2,
            },
        )?;
        let skip = if epoch == progress.epoch + 1 {
            progress.step
        } else {
            0
        };
        observer(Event::EpochStart {
            epoch,
            steps: steps_per_epoch,
            lr,
        });
        let epoch_start = Instant::now();
        let mut acc = Accumulator::new(&net);
        let remaining = config
            .max_steps
            .map_or(usize::MAX, |m| m.saturating_sub(total_steps));
        let planned = (steps_per_epoch - skip).min(remaining);
        let segment = Segment {
            batches: Box::new(loader.skip(skip)),
            steps: planned,
            lr,
            done: total_steps,
            stop: None,
        };
        let mut step = skip;
        let mut diverged = None;
        let mut on_step = |stats: StepStats| {
            step += 1;
            let worst = stats
                .units
                .iter()
                .flatten()
                .map(|u| u.cross_entropy)
                .chain([stats.head_loss])
                .find(|v| !v.is_finite());
            if let Some(value) = worst {
                diverged = Some(TrainError::Diverged { epoch, step, value });
                return ControlFlow::Break(());
            }
            acc.add(&stats);
            let secs = epoch_start.elapsed().as_secs_f64();
            observer(Event::Step {
                step,
                stats: &stats,
                images_per_second: acc.images as f64 / secs.max(1e-9),
            });
            ControlFlow::Continue(())
        };
        let (back, timings) = cluster.run_segment(net, segment, &mut on_step);
        net = back;
        let timings = match (timings, diverged) {
            (Err(RuntimeError::Stopped), Some(e)) => return Err(e),
            (t, _) => t?.timings,
        };
        let step = skip + planned;
        total_steps += planned;
        train_steps += planned;
        let stopped = step < steps_per_epoch;
        let secs = epoch_start.elapsed().as_secs_f64();
        train_time += secs;
        images_seen += acc.images;
        let last = epoch == config.epochs || config.max_steps.is_some_and(|m| total_steps >= m);
        if !leader {
            if last {
                break;
            }
            continue;
        }
        let done = Progress {
            epoch: if stopped { epoch - 1 } else { epoch },
            step: if stopped { step } else { 0 },
        };
        let test_result = if last || epoch % config.eval_every == 0 {
            observer(Event::Evaluating);
            let r = eval(&net)?;
            last_eval = Some(r.clone());
            Some(r)
        } else {
            None
        };
        let mut metrics = acc.finish(epoch, lr, step - skip, test_result, secs, lambda, started);
        metrics.nodes = timings;
        if !stopped {
            dir.append_metrics(&metrics)?;
        }
        checkpoint::save(&net, done, &dir.checkpoint_path())?;
        info!(
            "epoch {epoch}: {} steps in {secs:.1} s, {:.0} img/s; checkpoint at epoch {} step {}",
            step - skip,
            metrics.images_per_second,
            done.epoch,
            done.step
        );
        observer(Event::EpochEnd(&metrics));
        if last {
            break;
        }
    }

    if !leader {
        return Ok(None);
    }
    let test = match last_eval {
        Some(r) => r,
        None => eval(&net)?,
    };
    let summary = Summary {
        epochs: dir.progress()?.unwrap_or_default().epoch,
        steps: total_steps,
        test,
        max_node_macs: plan.figure_max_node_macs(),
        inference_macs: plan.inference_macs(),
        params: plan.total_params(),
        images_per_second: images_seen as f64 / train_time.max(1e-9),
        wall_seconds: started.elapsed().as_secs_f64(),
        step_seconds: train_time / train_steps.max(1) as f64,
        runtime: cluster.describe(),
    };
    dir.write_summary(&summary)?;
    info!(
        "done: head {:.2}%, ensemble {:.2}%, {:.0} s",
        summary.test.head * 100.0,
        summary.test.ensemble * 100.0,
        summary.wall_seconds
    );
    Ok(Some(summary))
}

/// The leader's config replaces every other process's.
fn share_config(cluster: &dyn Cluster, config: &RunConfig) -> Result<RunConfig, TrainError> {
    let mut bytes = serde_json::to_vec(config)
        .map_err(|e| ConfigError(format!("config does not serialise: {e}")))?;
    cluster.broadcast(&mut bytes)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ConfigError(format!("config from the leader: {e}")).into())
}
