//! One invocation of the trainer on a [`Cluster`]: open the run directory (leader), the epoch loop,
//! and how it ends ([`Outcome`]).

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tracing::info;

use super::divergence;
use super::metrics::Accumulator;
use super::run_dir::{self, RunDir, RunDirError};
use super::trace::TraceFile;
use super::TrainError;
use super::{prepare, ConfigError, Event, Invocation, Outcome, Prepared, RunConfig, Summary};
use crate::checkpoint::{self, Progress, Restore};
use crate::data::{Loader, LoaderConfig};
use crate::eval::evaluate;
use crate::local::{Network, StepStats};
use crate::parallel::{Cluster, RuntimeError, Segment, Topology};

/// What the leader found in the run directory.
#[derive(Default)]
struct Opened {
    /// Where training starts.
    progress: Progress,
    /// The summary of a run that had finished before (nothing to do).
    finished: Option<Summary>,
}

/// Opens the run directory for `config` (leader only, under the directory's lock): removes stale
/// `.tmp` files; a fresh run writes its config and, with `init_from`, starts from those weights; a
/// resumed one ([`check_resume`] passed) stops at a finished run, or loads the checkpoint and drops
/// metrics lines past it.
fn open_run(
    config: &RunConfig,
    dir: &RunDir,
    resume: bool,
    net: &mut Network,
) -> Result<Opened, TrainError> {
    for stale in dir.remove_stale_tmp()? {
        info!("removed {}, left by an interrupted write", stale.display());
    }
    if !resume {
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
        return Ok(Opened::default());
    }
    if let Some(summary) = dir.read_summary()? {
        info!("{} is finished: nothing to do", dir.path().display());
        return Ok(Opened {
            progress: Progress {
                epoch: config.epochs,
                step: 0,
            },
            finished: Some(summary),
        });
    }
    let progress = checkpoint::load(net, &dir.checkpoint_path(), Restore::State)?;
    dir.keep_metrics_through(progress.epoch)?;
    info!(
        "resume {} after epoch {} step {}",
        dir.path().display(),
        progress.epoch,
        progress.step
    );
    Ok(Opened {
        progress,
        finished: None,
    })
}

/// A resume's config must be the run's own (only the data's location may differ): checked before
/// anything is read or built.
fn check_resume(config: &RunConfig, dir: &RunDir) -> Result<(), TrainError> {
    let saved = dir.read_config()?;
    let differ = run_dir::differing_settings(&saved, config);
    if !differ.is_empty() {
        return Err(ConfigError(format!(
            "--resume: the settings differ from {} ({}); a resume takes the run's own settings, \
             with no other flags than --max-steps, --data-dir and the runtime's (--workers, \
             --transport, ...)",
            dir.file(RunDir::CONFIG).display(),
            differ.join(", ")
        ))
        .into());
    }
    if saved.data.path != config.data.path {
        info!(
            "data from {} instead of {}'s {} (--data-dir: the dataset moved)",
            show(&config.data.path),
            RunDir::CONFIG,
            show(&saved.data.path)
        );
    }
    Ok(())
}

fn show(path: &Option<std::path::PathBuf>) -> String {
    path.as_ref()
        .map_or("the dataset's default directory".into(), |p| {
            p.display().to_string()
        })
}

/// [`super::run`] on a [`Cluster`]: trains `config` in `dir` as `invocation` says. The leader locks
/// `dir` unless the caller did ([`RunDir::open`]); other MPI ranks never touch it.
pub fn run_on(
    cluster: &mut dyn Cluster,
    config: &RunConfig,
    dir: &RunDir,
    invocation: &Invocation,
    observer: &mut dyn FnMut(Event),
) -> Result<Outcome, TrainError> {
    invocation.validate()?;
    let Shared { config, max_steps } = share(cluster, config, invocation.max_steps)?;
    let config = &config;
    let leader = cluster.leader();
    let held;
    let dir = if leader && !dir.is_locked() {
        held = RunDir::open(dir.path())?;
        &held
    } else {
        dir
    };
    if leader && invocation.resume {
        check_resume(config, dir)?;
    }
    let started = Instant::now();
    let Prepared {
        splits,
        plan,
        mut net,
        device,
    } = prepare(config)?;
    // Other ranks never touch the run directory: the leader's state arrives in share_start.
    let opened = if leader {
        open_run(config, dir, invocation.resume, &mut net)?
    } else {
        Opened::default()
    };
    let mut progress = opened.progress;
    cluster.share_start(&mut net, &mut progress)?;
    if let Some(summary) = opened.finished {
        return Ok(Outcome::AlreadyFinished(summary));
    }
    if progress.epoch >= config.epochs && !leader {
        // The leader only evaluates and writes the summary.
        return Ok(Outcome::Follower);
    }
    let training = progress.epoch < config.epochs;
    if training {
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
    }
    if let Some(m) = max_steps {
        info!("--max-steps {m}: this invocation trains at most {m} steps");
    }

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
    // This invocation's steps, images and training seconds (the summary's speed).
    let (mut trained, mut images_seen, mut train_time) = (0usize, 0usize, 0f64);
    let mut last_eval = None;
    let lambda = config.loss.diversity_weight;
    // Only the leader decides to stop; the runtime carries its decision to every rank.
    let stop = invocation.stop.as_deref().filter(|_| leader);

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
        let remaining = max_steps.map_or(usize::MAX, |m| m - trained);
        let planned = (steps_per_epoch - skip).min(remaining);
        let segment = Segment {
            batches: Box::new(loader.skip(skip)),
            steps: planned,
            lr,
            done: total_steps,
            stop,
        };
        let mut step = skip;
        let mut diverged = None;
        let mut on_step = |stats: StepStats| {
            step += 1;
            if let Some(d) = divergence::find(&stats, config, lr) {
                diverged = Some(TrainError::Diverged {
                    epoch,
                    step,
                    loss: d.loss,
                    value: d.value,
                    hint: d.hint,
                });
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
        let (back, end) = cluster.run_segment(net, segment, &mut on_step);
        net = back;
        let end = match (end, diverged) {
            (Err(RuntimeError::Stopped), Some(e)) => return Err(e),
            (end, _) => end?,
        };
        let ran = end.steps;
        let step = skip + ran;
        total_steps += ran;
        trained += ran;
        let secs = epoch_start.elapsed().as_secs_f64();
        train_time += secs;
        images_seen += acc.images;
        let complete = step == steps_per_epoch;
        let at = if complete {
            Progress { epoch, step: 0 }
        } else {
            Progress {
                epoch: epoch - 1,
                step,
            }
        };
        let last = complete && epoch == config.epochs;
        let ends = if ran < planned {
            info!("stop requested: stopped after step {step} of epoch {epoch}");
            Some(Outcome::Interrupted(at))
        } else if max_steps.is_some_and(|m| trained >= m) && !last {
            info!("--max-steps reached: {trained} steps trained in this invocation");
            Some(Outcome::StepLimit(at))
        } else {
            None
        };
        if leader && complete {
            let test_result = if last || epoch % config.eval_every == 0 {
                observer(Event::Evaluating);
                let r = eval(&net)?;
                last_eval = Some(r.clone());
                Some(r)
            } else {
                None
            };
            let mut metrics = acc.finish(epoch, lr, ran, test_result, secs, lambda, started);
            metrics.nodes = end.timings;
            dir.append_metrics(&metrics)?;
            if !end.trace.intervals.is_empty() {
                let trace = TraceFile::new(
                    &Topology::new(&plan),
                    &end.trace,
                    (epoch, ran, config.batch_size),
                    cluster.describe(),
                );
                dir.write_trace(&trace)?;
            }
            checkpoint::save(&net, at, &dir.checkpoint_path())?;
            info!(
                "epoch {epoch}: {ran} steps in {secs:.1} s, {:.0} img/s; checkpoint at epoch {epoch}",
                metrics.images_per_second,
            );
            observer(Event::EpochEnd(&metrics));
        } else if leader && ran > 0 {
            // A part of an epoch: no metrics line, but the checkpoint, from which a resume
            // continues exactly.
            checkpoint::save(&net, at, &dir.checkpoint_path())?;
            info!(
                "epoch {epoch}: {ran} steps in {secs:.1} s; checkpoint at epoch {} step {}",
                at.epoch, at.step
            );
        }
        if let Some(outcome) = ends {
            return Ok(outcome);
        }
    }

    if !leader {
        return Ok(Outcome::Follower);
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
        step_seconds: train_time / trained.max(1) as f64,
        runtime: cluster.describe(),
    };
    dir.write_summary(&summary)?;
    info!(
        "done: head {:.2}%, ensemble {:.2}%, {:.0} s",
        summary.test.head * 100.0,
        summary.test.ensemble * 100.0,
        summary.wall_seconds
    );
    Ok(Outcome::Finished(summary))
}

/// What the leader decides for every process before anything is built.
#[derive(Serialize, Deserialize)]
struct Shared {
    config: RunConfig,
    max_steps: Option<usize>,
}

/// The leader's config and step limit replace every other process's.
fn share(
    cluster: &dyn Cluster,
    config: &RunConfig,
    max_steps: Option<usize>,
) -> Result<Shared, TrainError> {
    let shared = Shared {
        config: config.clone(),
        max_steps,
    };
    let mut bytes = serde_json::to_vec(&shared)
        .map_err(|e| ConfigError(format!("config does not serialise: {e}")))?;
    cluster.broadcast(&mut bytes)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ConfigError(format!("config from the leader: {e}")).into())
}
