//! The one-process trainer: a validated [`RunConfig`] in, a run directory out.
//!
//! A run directory holds `config.json` (the resolved config, written before step 1; `--config` replays
//! it), `metrics.jsonl` (one line per epoch), `checkpoint.safetensors` (after every epoch and when a run
//! stops early; see `checkpoint` for the names) and `summary.json` (at the end). All writes are atomic.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::checkpoint::{self, CheckpointError, Progress};
use crate::data::{self, DataError, DataSpec, Loader, LoaderConfig};
use crate::device::{self, DeviceChoice, DeviceError};
use crate::eval::{evaluate, EvalResult};
use crate::local::{LossConfig, Network, SgdConfig, StepStats};
use crate::model::Arch;
use crate::parallel::{self, NodeTiming, RuntimeError, Segment};
use crate::plan::{AuxInput, Plan, PlanError};
use crate::schedule::Schedule;

/// Everything that defines a run. Serialised as the run's `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The data.
    pub data: DataSpec,
    /// BasicBlocks per stage (n of ResNet-(6n+2)).
    pub blocks_per_stage: usize,
    /// `[w0, w1, w2, w3]`.
    pub widths: [i64; 4],
    /// Plan name: `1`, `1A`, K, or `stage:block,...` boundaries.
    pub plan: String,
    /// Neuron groups G.
    pub groups: i64,
    /// Auxiliary classifier input.
    pub aux_input: AuxInput,
    /// Local loss weights.
    pub loss: LossConfig,
    /// Optimizer.
    pub sgd: SgdConfig,
    /// Base learning rate lr0.
    pub lr: f64,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Epochs E.
    pub epochs: usize,
    /// Training batch size.
    pub batch_size: usize,
    /// Evaluation batch size.
    pub eval_batch_size: usize,
    /// Seed of the weights, data order and augmentation.
    pub seed: u64,
    /// Where to train.
    pub device: DeviceChoice,
    /// libtorch intra-op threads (0: libtorch's default).
    pub threads: usize,
    /// Data-loading threads.
    pub loader_workers: usize,
    /// Train-time augmentation (where the dataset has any).
    pub augment: bool,
    /// Shuffle the training set every epoch.
    pub shuffle: bool,
    /// Stop after this many training steps in all (for reproducibility checks and speed runs).
    pub max_steps: Option<usize>,
    /// Start from these weights (a checkpoint's parameter names) instead of a fresh init.
    pub init_from: Option<PathBuf>,
    /// Evaluate every this many epochs (and always after the last).
    pub eval_every: usize,
}

impl RunConfig {
    /// The architecture for a dataset of this shape.
    pub fn arch(&self, channels: usize, size: usize, classes: usize) -> Arch {
        Arch {
            blocks_per_stage: self.blocks_per_stage,
            widths: self.widths,
            in_channels: channels as i64,
            image_size: size as i64,
            classes: classes as i64,
        }
    }

    /// The validated plan of this config on `arch`, with InfoPro's decoders when the loss has them.
    pub fn build_plan(&self, arch: Arch) -> Result<Plan, PlanError> {
        Ok(Plan::new(arch, &self.plan, self.groups, self.aux_input)?
            .with_decoder(self.loss.infopro.map(|i| i.decoder_width)))
    }

    /// [`RunConfig::build_plan`] on the data's declared shape ([`DataSpec::shape`]), without reading
    /// the data: what `groupwise plan` prints and what sweeps and reports cost.
    pub fn declared_plan(&self) -> Result<Plan, PlanError> {
        let (channels, size, classes) = self.data.shape();
        self.build_plan(self.arch(channels, size, classes))
    }

    /// Checks what can be checked without the data.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.epochs == 0 {
            return bad("--epochs must be at least 1".into());
        }
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            return bad("--batch-size and --eval-batch-size must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("--lr {} must be a positive number", self.lr));
        }
        if self.eval_every == 0 {
            return bad("--eval-every must be at least 1".into());
        }
        if self.max_steps == Some(0) {
            return bad("--max-steps must be at least 1".into());
        }
        if let Some(i) = &self.loss.infopro {
            let weights = i.reconstruction.iter().chain(&i.classification);
            if weights.clone().any(|w| !(w.is_finite() && *w >= 0.0)) {
                return bad("InfoPro weights must be finite and non-negative".into());
            }
            if i.decoder_width < 1 {
                return bad("InfoPro's decoder_width must be at least 1".into());
            }
        }
        Ok(())
    }
}

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
    #[error("{0}")]
    Config(String),
    /// A run-directory file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
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

/// Training statistics of one unit over an epoch (means over batches).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UnitMetrics {
    /// Module k.
    pub module: usize,
    /// Group g.
    pub group: usize,
    /// Mean cross-entropy of `aux[k][g]`.
    pub loss: f64,
    /// Mean diversity term of its boundary.
    pub diversity: f64,
    /// Training accuracy of `aux[k][g]`.
    pub accuracy: f64,
    /// Mean InfoPro reconstruction BCE (0 without InfoPro).
    #[serde(default)]
    pub reconstruction: f64,
}

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// Epoch (1-based).
    pub epoch: usize,
    /// Learning rate of the epoch.
    pub lr: f64,
    /// Training steps done this epoch.
    pub steps: usize,
    /// Mean local loss `L_k` per boundary.
    pub train_module_loss: Vec<f64>,
    /// Per-unit training statistics.
    pub train_units: Vec<UnitMetrics>,
    /// Mean head cross-entropy.
    pub train_head_loss: f64,
    /// Head training accuracy.
    pub train_head_accuracy: f64,
    /// Test accuracies, when evaluated this epoch.
    pub test: Option<EvalResult>,
    /// Seconds of training this epoch (evaluation excluded).
    pub train_seconds: f64,
    /// Training images per second.
    pub images_per_second: f64,
    /// Seconds since the run (this invocation) started.
    pub elapsed_seconds: f64,
    /// Where each node's time went this epoch (one entry `all` for the sequential path).
    #[serde(default)]
    pub nodes: Vec<NodeTiming>,
}

/// `summary.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Epochs completed.
    pub epochs: usize,
    /// Total training steps.
    pub steps: usize,
    /// Final test accuracies.
    pub test: EvalResult,
    /// Largest per-node forward MACs (paper's figure conventions).
    pub max_node_macs: u64,
    /// Inference MACs per image.
    pub inference_macs: u64,
    /// Trainable parameters of all nodes.
    pub params: u64,
    /// Mean training images per second over this invocation.
    pub images_per_second: f64,
    /// Seconds of this invocation.
    pub wall_seconds: f64,
    /// Mean seconds per training step over this invocation.
    #[serde(default)]
    pub step_seconds: f64,
    /// How the nodes ran (`sequential`, `threads`, `mpi:<ranks>`).
    #[serde(default)]
    pub runtime: String,
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

/// Names of the run-directory files.
pub mod files {
    /// Resolved configuration.
    pub const CONFIG: &str = "config.json";
    /// Per-epoch metrics.
    pub const METRICS: &str = "metrics.jsonl";
    /// Latest checkpoint.
    pub const CHECKPOINT: &str = "checkpoint.safetensors";
    /// Final summary.
    pub const SUMMARY: &str = "summary.json";
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let io = |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Reads a run's `config.json`.
pub fn read_config(path: &Path) -> Result<RunConfig, TrainError> {
    let text = std::fs::read_to_string(path).map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text)
        .map_err(|e| TrainError::Config(format!("{}: not a groupwise config: {e}", path.display())))
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
        return Err(TrainError::Config(format!(
            "images are {h}x{w}; the ResNets here need square images"
        )));
    }
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

/// Where the nodes of a run execute: this process (sequentially or as threads), or MPI ranks.
pub trait Cluster {
    /// Whether this process writes the run directory, evaluates and reports (rank 0).
    fn leader(&self) -> bool {
        true
    }
    /// Called before anything is built: the leader's config replaces every other rank's.
    fn share_config(&self, _config: &mut RunConfig) -> Result<(), TrainError> {
        Ok(())
    }
    /// Called once the leader has loaded or initialised the network: its state and progress reach
    /// every rank.
    fn share_start(&self, _net: &mut Network, _progress: &mut Progress) -> Result<(), TrainError> {
        Ok(())
    }
    /// Runs one segment of training steps; on the leader `net` comes back with every node's state.
    fn run_segment(
        &self,
        net: Network,
        segment: Segment,
        on_step: &mut parallel::OnStep<TrainError>,
    ) -> (Network, Result<Vec<NodeTiming>, TrainError>);
    /// `sequential`, `threads` or `mpi:<ranks>`.
    fn describe(&self) -> String;
    /// Ends every process of the job after `message` (an error on this one); a no-op in one process,
    /// where returning the error ends the job.
    fn abort_job(&self, _message: &str) {}
}

/// This process: the sequential path or one thread per node.
pub struct Local(pub parallel::Runtime);

impl Cluster for Local {
    fn run_segment(
        &self,
        net: Network,
        segment: Segment,
        on_step: &mut parallel::OnStep<TrainError>,
    ) -> (Network, Result<Vec<NodeTiming>, TrainError>) {
        parallel::run_local(&self.0, net, segment, on_step)
    }

    fn describe(&self) -> String {
        match self.0.workers {
            parallel::Workers::Sequential => "sequential".into(),
            parallel::Workers::Threads => "threads".into(),
        }
    }
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
        &Local(parallel::Runtime::default()),
        config,
        run_dir,
        resume,
        observer,
    )?;
    Ok(summary.expect("a local run is its own leader"))
}

/// [`run`] on a [`Cluster`]. Returns the summary on the leader, `None` on other ranks.
pub fn run_on(
    cluster: &dyn Cluster,
    config: &RunConfig,
    run_dir: &Path,
    resume: bool,
    observer: &mut dyn FnMut(Event),
) -> Result<Option<Summary>, TrainError> {
    let mut config = config.clone();
    cluster.share_config(&mut config)?;
    let config = &config;
    let leader = cluster.leader();
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TrainError::Io { path, source }
    };
    let started = Instant::now();
    let Prepared {
        splits,
        plan,
        mut net,
        device,
    } = prepare(config)?;
    let config_path = run_dir.join(files::CONFIG);
    let ckpt_path = run_dir.join(files::CHECKPOINT);
    let metrics_path = run_dir.join(files::METRICS);
    let mut progress = Progress::default();
    if !leader {
        // Other ranks never touch the run directory: the leader's state arrives in share_start.
    } else if resume {
        // --max-steps is how far to go this time, not part of what the run is.
        let saved = read_config(&config_path)?;
        let identity = |c: &RunConfig| RunConfig {
            max_steps: None,
            ..c.clone()
        };
        if identity(&saved) != identity(config) {
            return Err(TrainError::Config(format!(
                "--resume: the settings differ from {}; resume with no other flags than --max-steps",
                config_path.display()
            )));
        }
        if saved.max_steps != config.max_steps {
            let json = serde_json::to_string_pretty(config).expect("config serialises");
            write_atomic(&config_path, json.as_bytes())?;
        }
        progress = checkpoint::load(&mut net, &ckpt_path, true)?;
        // Drop metric lines of epochs the checkpoint does not contain (a crash between writes).
        if let Ok(text) = std::fs::read_to_string(&metrics_path) {
            let kept: String = text
                .lines()
                .filter(|l| {
                    serde_json::from_str::<EpochMetrics>(l)
                        .map(|m| m.epoch <= progress.epoch)
                        .unwrap_or(false)
                })
                .map(|l| format!("{l}\n"))
                .collect();
            write_atomic(&metrics_path, kept.as_bytes())?;
        }
    } else {
        std::fs::create_dir_all(run_dir).map_err(io(run_dir))?;
        if ckpt_path.exists() {
            return Err(TrainError::Config(format!(
                "{} already holds a run; pass --resume to continue it or choose another --run-dir",
                run_dir.display()
            )));
        }
        let json = serde_json::to_string_pretty(config).expect("config serialises");
        write_atomic(&config_path, json.as_bytes())?;
        let _ = std::fs::remove_file(&metrics_path);
        if let Some(init) = &config.init_from {
            checkpoint::load(&mut net, init, false)?;
        }
    }
    cluster.share_start(&mut net, &mut progress)?;

    let train = Arc::new(splits.train);
    let test = Arc::new(splits.test);
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
        let remaining = config.max_steps.map_or(usize::MAX, |m| m - total_steps);
        let planned = (steps_per_epoch - skip).min(remaining);
        let segment = Segment {
            batches: Box::new(loader.skip(skip)),
            steps: planned,
            lr,
            done: total_steps,
        };
        let mut step = skip;
        let mut on_step = |stats: StepStats| -> Result<(), TrainError> {
            step += 1;
            let worst = stats
                .units
                .iter()
                .flatten()
                .map(|u| u.cross_entropy)
                .chain([stats.head_loss])
                .find(|v| !v.is_finite());
            if let Some(value) = worst {
                return Err(TrainError::Diverged { epoch, step, value });
            }
            acc.add(&stats);
            let secs = epoch_start.elapsed().as_secs_f64();
            observer(Event::Step {
                step,
                stats: &stats,
                images_per_second: acc.images as f64 / secs.max(1e-9),
            });
            Ok(())
        };
        let (back, timings) = cluster.run_segment(net, segment, &mut on_step);
        net = back;
        let timings = timings?;
        let step = skip + planned;
        total_steps += planned;
        train_steps += planned;
        let stopped = step < steps_per_epoch;
        let secs = epoch_start.elapsed().as_secs_f64();
        train_time += secs;
        images_seen += acc.images;
        if !leader {
            if config.max_steps.is_some_and(|m| total_steps >= m) || epoch == config.epochs {
                break;
            }
            continue;
        }
        let done = Progress {
            epoch: if stopped { epoch - 1 } else { epoch },
            step: if stopped { step } else { 0 },
        };
        let last = epoch == config.epochs || config.max_steps.is_some_and(|m| total_steps >= m);
        let test_result = if last || epoch % config.eval_every == 0 {
            observer(Event::Evaluating);
            let r = evaluate(
                &net,
                test.clone(),
                splits.test_transform.clone(),
                config.eval_batch_size,
                config.loader_workers,
                device,
            )?;
            last_eval = Some(r.clone());
            Some(r)
        } else {
            None
        };
        let mut metrics = acc.finish(epoch, lr, step - skip, test_result, secs, lambda, started);
        metrics.nodes = timings;
        if !stopped {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&metrics_path)
                .map_err(io(&metrics_path))?;
            let line = serde_json::to_string(&metrics).expect("metrics serialise");
            writeln!(f, "{line}").map_err(io(&metrics_path))?;
        }
        checkpoint::save(&net, done, &ckpt_path)?;
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
        None => evaluate(
            &net,
            test,
            splits.test_transform.clone(),
            config.eval_batch_size,
            config.loader_workers,
            device,
        )?,
    };
    let final_progress = checkpoint::read_progress(&ckpt_path).unwrap_or_default();
    let summary = Summary {
        epochs: final_progress.epoch,
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
    let json = serde_json::to_string_pretty(&summary).expect("summary serialises");
    write_atomic(&run_dir.join(files::SUMMARY), json.as_bytes())?;
    Ok(Some(summary))
}

/// Sums of per-step statistics over an epoch.
struct Accumulator {
    /// Per unit: sums of cross-entropy, diversity, correct, reconstruction.
    units: Vec<Vec<(f64, f64, i64, f64)>>,
    head_loss: f64,
    head_correct: i64,
    images: usize,
    steps: usize,
}

impl Accumulator {
    fn new(net: &Network) -> Self {
        Accumulator {
            units: net
                .units
                .iter()
                .map(|u| vec![(0.0, 0.0, 0, 0.0); u.len()])
                .collect(),
            head_loss: 0.0,
            head_correct: 0,
            images: 0,
            steps: 0,
        }
    }

    fn add(&mut self, s: &StepStats) {
        for (k, units) in s.units.iter().enumerate() {
            for (g, u) in units.iter().enumerate() {
                let e = &mut self.units[k][g];
                e.0 += u.cross_entropy;
                e.1 += u.diversity;
                e.2 += u.correct;
                e.3 += u.reconstruction;
            }
        }
        self.head_loss += s.head_loss;
        self.head_correct += s.head_correct;
        self.images += s.batch as usize;
        self.steps += 1;
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        epoch: usize,
        lr: f64,
        steps: usize,
        test: Option<EvalResult>,
        secs: f64,
        lambda: f64,
        started: Instant,
    ) -> EpochMetrics {
        let n = self.steps.max(1) as f64;
        let imgs = self.images.max(1) as f64;
        let train_units: Vec<UnitMetrics> = self
            .units
            .iter()
            .enumerate()
            .flat_map(|(k, us)| {
                us.iter()
                    .enumerate()
                    .map(move |(g, &(ce, div, c, rec))| UnitMetrics {
                        module: k,
                        group: g,
                        loss: ce / n,
                        diversity: div / n,
                        accuracy: c as f64 / imgs,
                        reconstruction: rec / n,
                    })
            })
            .collect();
        let train_module_loss = self
            .units
            .iter()
            .map(|us| {
                us.iter().map(|u| u.0).sum::<f64>() / n
                    + lambda * us.first().map_or(0.0, |u| u.1) / n
            })
            .collect();
        EpochMetrics {
            epoch,
            lr,
            steps,
            train_module_loss,
            train_units,
            train_head_loss: self.head_loss / n,
            train_head_accuracy: self.head_correct as f64 / imgs,
            test,
            train_seconds: secs,
            images_per_second: self.images as f64 / secs.max(1e-9),
            elapsed_seconds: started.elapsed().as_secs_f64(),
            nodes: Vec::new(),
        }
    }
}
