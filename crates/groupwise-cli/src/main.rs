//! The `groupwise` command: train, evaluate, plan and benchmark GN-DGL runs.

mod bench;
mod bench_parallel;
mod presets;
mod report;
mod sweep;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use groupwise::data::{self, DatasetKind};
use groupwise::device::DeviceChoice;
use groupwise::parallel;
use groupwise::plan::{AuxInput, Plan};
use groupwise::schedule::Schedule;
use groupwise::train::{self, Event, RunConfig};

/// Local learning with neuron groups (GN-DGL): train a ResNet as K modules x G groups of local units.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a network (with no arguments: the `quick` preset, GN-DGL K=4 G=2 on Fashion-MNIST).
    Train(Box<TrainArgs>),
    /// Evaluate a saved run directory or checkpoint on its test split.
    Eval(EvalArgs),
    /// Print the K x G partition: every node's layers, parameters and forward MACs per image.
    Plan(PlanArgs),
    /// Time a training step against PyTorch (same step, same process tree, same run).
    Bench(bench::BenchArgs),
    /// List the presets under configs/ (the paper's grid, its short-budget variants, quick, smoke).
    Presets(PresetsArgs),
    /// Run a set of configurations (presets x grid), skipping finished runs and resuming
    /// interrupted ones; writes a report at the end.
    Sweep(Box<sweep::SweepArgs>),
    /// Results table (Markdown, CSV) and plots (SVG, PNG) of finished or running run directories.
    Report(report::ReportArgs),
}

#[derive(Args)]
struct PresetsArgs {
    /// Print this preset's resolved config (its bases applied) as TOML instead of the list.
    #[arg(long)]
    show: Option<String>,
    /// With --show: print it as JSON, the form of a run's config.json (`train --config` replays it).
    #[arg(long, requires = "show")]
    json: bool,
}

fn cmd_presets(args: PresetsArgs) -> Result<()> {
    if let Some(name) = args.show {
        let config = presets::preset(&name)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&config)?);
        } else {
            print!("{}", toml::to_string(&config).context("config as TOML")?);
        }
        return Ok(());
    }
    for name in presets::names() {
        println!("{name:<28} {}", presets::describe(name));
    }
    Ok(())
}

#[derive(Clone, Copy, ValueEnum)]
enum AuxKind {
    /// All C channels; only the own slice carries gradient (the paper's main setting).
    StopGradient,
    /// The group's own C/G channels only.
    Isolated,
    /// Own slice plus a window of every other group's slice (see --aux-ratio).
    Partial,
}

#[derive(Clone, Copy, ValueEnum)]
enum ScheduleKind {
    /// Warm-up then cosine (METHOD.md section 5).
    Cosine,
    /// Multiply by --gamma at each of --milestones.
    Step,
}

#[derive(Clone, Copy, ValueEnum)]
enum DeviceArg {
    /// The CPU.
    Cpu,
    /// The first CUDA GPU.
    Cuda,
}

/// Model, plan and data flags shared by `train` and `plan`; unset flags keep the preset's value.
#[derive(Args, Clone, Default)]
struct ModelArgs {
    /// Depth of the CIFAR ResNet-(6n+2): 20, 32, 44, 56, 110 (any 6n+2 works).
    #[arg(long)]
    depth: Option<usize>,
    /// Widths w0,w1,w2,w3 (the paper's ResNet-32x2 is 32,32,64,128).
    #[arg(long, value_delimiter = ',')]
    widths: Option<Vec<i64>>,
    /// Module plan: 1 (end-to-end), 1A, K (2, 3, 4, 8, 16 from the paper's table for ResNet-32;
    /// cost-balanced otherwise) or explicit boundaries like 1:2,2:1,3:0,3:4.
    #[arg(long)]
    plan: Option<String>,
    /// Neuron groups G (must divide every width).
    #[arg(long)]
    groups: Option<i64>,
    /// What auxiliary classifiers read.
    #[arg(long, value_enum)]
    aux_input: Option<AuxKind>,
    /// Window ratio r in (0,1) for --aux-input partial.
    #[arg(long)]
    aux_ratio: Option<f64>,
    /// Dataset.
    #[arg(long, value_parser = parse_dataset)]
    dataset: Option<DatasetKind>,
}

#[derive(Args, Default)]
struct TrainArgs {
    /// Start from a preset: a name under configs/ (quick (default), short, paper, smoke,
    /// short/resnet32-g2-k4, ...; `groupwise presets` lists them) or a .toml file.
    #[arg(long)]
    preset: Option<String>,
    /// Start from an earlier run's config.json (replays it exactly; other flags override it).
    #[arg(long, conflicts_with = "preset")]
    config: Option<PathBuf>,
    /// Run directory (default: runs/<preset>-<unix time>).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Continue the run in --run-dir from its checkpoint, exactly where it stopped (with its own
    /// config.json; only --max-steps may change).
    #[arg(long, requires = "run_dir", conflicts_with = "preset")]
    resume: bool,
    #[command(flatten)]
    model: ModelArgs,
    /// Directory with the dataset files (default for fashion-mnist: /usr/share/datasets/fashion-mnist).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Train on a seeded random subset of this many training images.
    #[arg(long)]
    train_subset: Option<usize>,
    /// Synthetic data: image size, channels, classes, train and test counts, e.g. 32,3,10,1000,200.
    #[arg(long, value_delimiter = ',')]
    synthetic: Option<Vec<usize>>,
    /// Weight lambda of the diversity term (0 disables it).
    #[arg(long)]
    diversity_weight: Option<f64>,
    /// Temperature T of the diversity term.
    #[arg(long)]
    temperature: Option<f64>,
    /// Add InfoPro's local loss (Wang et al., ICLR 2021): a decoder per auxiliary classifier
    /// reconstructs the input image (BCE) beside the cross-entropy, with the reference's weights (1, 1);
    /// a preset's `[loss.infopro]` sets other weights.
    #[arg(long)]
    infopro: bool,
    /// Base learning rate lr0.
    #[arg(long)]
    lr: Option<f64>,
    /// Learning-rate schedule.
    #[arg(long, value_enum)]
    schedule: Option<ScheduleKind>,
    /// Warm-up epochs of the cosine schedule (the paper: 10).
    #[arg(long)]
    warmup_epochs: Option<usize>,
    /// Epochs at which the step schedule decays, e.g. 80,120.
    #[arg(long, value_delimiter = ',')]
    milestones: Option<Vec<usize>>,
    /// Decay factor of the step schedule.
    #[arg(long)]
    gamma: Option<f64>,
    /// SGD momentum.
    #[arg(long)]
    momentum: Option<f64>,
    /// Weight decay on every parameter.
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Plain momentum instead of Nesterov.
    #[arg(long)]
    no_nesterov: bool,
    /// Epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Training batch size.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Evaluation batch size.
    #[arg(long)]
    eval_batch_size: Option<usize>,
    /// Seed of weights, data order and augmentation.
    #[arg(long)]
    seed: Option<u64>,
    /// Device.
    #[arg(long, value_enum)]
    device: Option<DeviceArg>,
    /// libtorch intra-op threads (0: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Data-loading threads.
    #[arg(long)]
    loader_workers: Option<usize>,
    /// Disable train-time augmentation.
    #[arg(long)]
    no_augment: bool,
    /// Keep the training set in file order.
    #[arg(long)]
    no_shuffle: bool,
    /// Stop after this many training steps in all.
    #[arg(long)]
    max_steps: Option<usize>,
    /// Initial weights from a safetensors checkpoint (parameter names as in `groupwise` checkpoints).
    #[arg(long)]
    init_from: Option<PathBuf>,
    /// Evaluate every this many epochs (always after the last).
    #[arg(long)]
    eval_every: Option<usize>,
    /// No progress bar (one line per epoch only).
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

#[derive(Clone, Copy, Default, ValueEnum)]
enum WorkersArg {
    /// One pipelined worker thread per node (K x G units, final columns, head).
    #[default]
    Threads,
    /// Every node in turn in one thread (the reference schedule).
    Sequential,
}

#[derive(Clone, Copy, Default, ValueEnum)]
enum TransportArg {
    /// All nodes in this process.
    #[default]
    Local,
    /// Nodes spread over MPI ranks: `mpirun -np N groupwise train --transport mpi ...` (build with
    /// `--features mpi`).
    Mpi,
}

/// How the nodes run (none of it changes the result; all may change on --resume).
#[derive(Args, Clone, Default)]
struct RuntimeArgs {
    /// Run nodes as pipelined threads (default) or one after the other.
    #[arg(long, value_enum, default_value_t)]
    workers: WorkersArg,
    /// Where the nodes live: this process, or MPI ranks.
    #[arg(long, value_enum, default_value_t)]
    transport: TransportArg,
    /// libtorch intra-op threads per worker (default: cores / workers on this machine, at least 1).
    #[arg(long)]
    threads_per_worker: Option<usize>,
    /// Messages in flight per link between nodes (back-pressure; 2 = double buffering).
    #[arg(long, default_value_t = 2)]
    pipeline_depth: usize,
    /// CUDA devices to place nodes on, round-robin in node order, e.g. 0,1,2,3 (with --device cuda;
    /// default: the first GPU).
    #[arg(long, value_delimiter = ',')]
    devices: Option<Vec<usize>>,
}

impl RuntimeArgs {
    /// The same settings as `groupwise train` flags (the local transport).
    fn to_args(&self) -> Vec<String> {
        let mut a = vec![
            "--workers".to_string(),
            match self.workers {
                WorkersArg::Threads => "threads",
                WorkersArg::Sequential => "sequential",
            }
            .to_string(),
            "--pipeline-depth".to_string(),
            self.pipeline_depth.to_string(),
        ];
        if let Some(t) = self.threads_per_worker {
            a.extend(["--threads-per-worker".to_string(), t.to_string()]);
        }
        if let Some(d) = &self.devices {
            let list: Vec<String> = d.iter().map(usize::to_string).collect();
            a.extend(["--devices".to_string(), list.join(",")]);
        }
        a
    }

    fn runtime(&self) -> Result<parallel::Runtime> {
        if self.pipeline_depth == 0 {
            bail!("--pipeline-depth must be at least 1");
        }
        if self.threads_per_worker == Some(0) {
            bail!("--threads-per-worker must be at least 1");
        }
        Ok(parallel::Runtime {
            workers: match self.workers {
                WorkersArg::Threads => parallel::Workers::Threads,
                WorkersArg::Sequential => parallel::Workers::Sequential,
            },
            threads_per_worker: self.threads_per_worker,
            pipeline_depth: self.pipeline_depth,
            devices: self.devices.clone().unwrap_or_default(),
            // Testing hook for the failure path (README, "Failures"): `<node>@<step>`.
            fault: std::env::var("GROUPWISE_FAULT")
                .ok()
                .map(|f| f.parse::<parallel::Fault>())
                .transpose()
                .map_err(anyhow::Error::msg)?,
        })
    }

    fn cluster(&self) -> Result<Box<dyn parallel::Cluster>> {
        let runtime = self.runtime()?;
        match self.transport {
            TransportArg::Local => Ok(Box::new(parallel::Local::new(runtime))),
            #[cfg(feature = "mpi")]
            TransportArg::Mpi => {
                if runtime.workers == parallel::Workers::Sequential {
                    bail!("--transport mpi runs nodes as workers; drop --workers sequential");
                }
                Ok(Box::new(groupwise::parallel::mpi::MpiCluster::init(
                    runtime,
                )?))
            }
            #[cfg(not(feature = "mpi"))]
            TransportArg::Mpi => bail!(
                "--transport mpi: this groupwise was built without MPI; rebuild with \
                 `cargo build --release --features mpi` (needs an MPI library and libclang)"
            ),
        }
    }
}

#[derive(Args)]
struct EvalArgs {
    /// A run directory, or a checkpoint file inside one.
    path: PathBuf,
    /// Write the result as JSON to stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct PlanArgs {
    /// Start from a preset (default quick; a name under configs/ or a .toml file) for the values not
    /// given.
    #[arg(long)]
    preset: Option<String>,
    #[command(flatten)]
    model: ModelArgs,
    /// Input channels (default: the dataset's).
    #[arg(long)]
    in_channels: Option<i64>,
    /// Image size (default: the dataset's).
    #[arg(long)]
    image_size: Option<i64>,
    /// Classes (default: the dataset's).
    #[arg(long)]
    classes: Option<i64>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

fn parse_dataset(s: &str) -> Result<DatasetKind, String> {
    s.parse::<DatasetKind>().map_err(|e| e.to_string())
}

fn base_config(preset: Option<&str>) -> Result<RunConfig> {
    presets::preset(preset.unwrap_or("quick")).context("--preset")
}

impl ModelArgs {
    fn apply(&self, c: &mut RunConfig) -> Result<()> {
        if let Some(d) = self.depth {
            if d < 8 || (d - 2) % 6 != 0 {
                bail!("--depth {d} is not of the form 6n+2 with n >= 1 (20, 32, 44, 56, 110)");
            }
            c.blocks_per_stage = (d - 2) / 6;
        }
        if let Some(w) = &self.widths {
            if w.len() != 4 {
                bail!(
                    "--widths takes 4 values w0,w1,w2,w3 (e.g. 16,16,32,64), got {}",
                    w.len()
                );
            }
            c.widths = [w[0], w[1], w[2], w[3]];
        }
        if let Some(p) = &self.plan {
            c.plan = p.clone();
        }
        if let Some(g) = self.groups {
            c.groups = g;
        }
        if let Some(k) = self.dataset {
            c.data.kind = k;
        }
        c.aux_input = match (self.aux_input, self.aux_ratio) {
            (Some(AuxKind::Partial), Some(r)) => AuxInput::Partial(r),
            (Some(AuxKind::Partial), None) => bail!("--aux-input partial needs --aux-ratio"),
            (Some(_), Some(_)) | (None, Some(_)) => {
                bail!("--aux-ratio only applies with --aux-input partial")
            }
            (Some(AuxKind::StopGradient), None) => AuxInput::StopGradient,
            (Some(AuxKind::Isolated), None) => AuxInput::Isolated,
            (None, None) => c.aux_input,
        };
        Ok(())
    }
}

impl TrainArgs {
    fn resolve(&self) -> Result<RunConfig> {
        let mut c = match (&self.config, &self.run_dir) {
            (Some(path), _) => train::read_config(path)?,
            // Resuming continues the run's own settings.
            (None, Some(dir)) if self.resume => {
                train::read_config(&dir.join(train::files::CONFIG))?
            }
            (None, _) => base_config(self.preset.as_deref())?,
        };
        self.model.apply(&mut c)?;
        if let Some(d) = &self.data_dir {
            c.data.path = Some(d.clone());
        }
        if self.train_subset.is_some() {
            c.data.train_subset = self.train_subset;
        }
        if let Some(s) = &self.synthetic {
            if s.len() != 5 {
                bail!(
                    "--synthetic takes 5 values size,channels,classes,train,test (e.g. \
                     32,3,10,1000,200), got {}",
                    s.len()
                );
            }
            c.data.kind = DatasetKind::Synthetic;
            c.data.synthetic = data::SyntheticSpec {
                size: s[0],
                channels: s[1],
                classes: s[2],
                train: s[3],
                test: s[4],
            };
        }
        set(&mut c.loss.diversity_weight, &self.diversity_weight);
        set(&mut c.loss.temperature, &self.temperature);
        if self.infopro && c.loss.infopro.is_none() {
            c.loss.infopro = Some(groupwise::local::InfoPro::default());
        }
        set(&mut c.lr, &self.lr);
        set(&mut c.sgd.momentum, &self.momentum);
        set(&mut c.sgd.weight_decay, &self.weight_decay);
        if self.no_nesterov {
            c.sgd.nesterov = false;
        }
        set(&mut c.epochs, &self.epochs);
        set(&mut c.batch_size, &self.batch_size);
        set(&mut c.eval_batch_size, &self.eval_batch_size);
        set(&mut c.seed, &self.seed);
        c.data.seed = c.seed;
        set(&mut c.threads, &self.threads);
        set(&mut c.loader_workers, &self.loader_workers);
        set(&mut c.eval_every, &self.eval_every);
        if let Some(d) = self.device {
            c.device = match d {
                DeviceArg::Cpu => DeviceChoice::Cpu,
                DeviceArg::Cuda => DeviceChoice::Cuda,
            };
        }
        if self.no_augment {
            c.augment = false;
        }
        if self.no_shuffle {
            c.shuffle = false;
        }
        if self.max_steps.is_some() {
            c.max_steps = self.max_steps;
        }
        if self.init_from.is_some() {
            c.init_from = self.init_from.clone();
        }
        c.schedule = match (self.schedule, &c.schedule) {
            (Some(ScheduleKind::Step), _) | (None, Schedule::Step { .. }) => {
                let (m0, g0) = match &c.schedule {
                    Schedule::Step { milestones, gamma } => (milestones.clone(), *gamma),
                    _ => (vec![c.epochs / 2, c.epochs * 3 / 4], 0.1),
                };
                Schedule::Step {
                    milestones: self.milestones.clone().unwrap_or(m0),
                    gamma: self.gamma.unwrap_or(g0),
                }
            }
            (Some(ScheduleKind::Cosine), _) | (None, Schedule::Cosine { .. }) => {
                if self.milestones.is_some() || self.gamma.is_some() {
                    bail!("--milestones and --gamma only apply with --schedule step");
                }
                let w0 = match c.schedule {
                    Schedule::Cosine { warmup_epochs } => warmup_epochs,
                    _ => 10,
                };
                Schedule::Cosine {
                    warmup_epochs: self.warmup_epochs.unwrap_or(w0),
                }
            }
        };
        c.validate()?;
        Ok(c)
    }
}

fn cmd_train(args: TrainArgs) -> Result<()> {
    let mut cluster = args.runtime.cluster()?;
    let leader = cluster.leader();
    let config = match args.resolve() {
        Ok(c) => c,
        // Other ranks take the leader's config (the run directory may live on its machine only).
        Err(_) if !leader && args.resume => base_config(None)?,
        Err(e) => {
            cluster.abort_job(&format!("error: {e:#}"));
            return Err(e);
        }
    };
    let run_dir = match &args.run_dir {
        Some(d) => d.clone(),
        None => {
            let name = match (&args.preset, &args.config) {
                (Some(p), _) => preset_label(p),
                (None, Some(_)) => "replay".into(),
                (None, None) => "quick".into(),
            };
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            PathBuf::from("runs").join(format!("{name}-{secs}"))
        }
    };
    let quiet = args.quiet || !leader;
    if leader {
        eprintln!(
            "groupwise: {} ResNet-{} widths {:?}, plan {}, G={}, {} epochs, batch {}, {} -> {}",
            config.data.kind,
            6 * config.blocks_per_stage + 2,
            config.widths,
            config.plan,
            config.groups,
            config.epochs,
            config.batch_size,
            cluster.describe(),
            run_dir.display()
        );
    }
    let mut bar: Option<ProgressBar> = None;
    let mut observer = |event: Event| match event {
        Event::EpochStart { epoch, steps, lr } => {
            if !quiet {
                let b = ProgressBar::new(steps as u64);
                b.set_style(
                    ProgressStyle::with_template(
                        "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                b.set_prefix(format!("{epoch}/{} lr {lr:.4}", config.epochs));
                bar = Some(b);
            }
        }
        Event::Step {
            step,
            stats,
            images_per_second,
        } => {
            if let Some(b) = &bar {
                b.set_position(step as u64);
                b.set_message(format!(
                    "head loss {:.3} acc {:.3} | {:.0} img/s",
                    stats.head_loss,
                    stats.head_correct as f64 / stats.batch as f64,
                    images_per_second
                ));
            }
        }
        Event::Evaluating => {
            if let Some(b) = &bar {
                b.set_message("evaluating...");
            }
        }
        Event::EpochEnd(m) => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            if !leader {
                return;
            }
            let test = m
                .test
                .as_ref()
                .map(|t| {
                    format!(
                        " | test head {:.2}% ensemble {:.2}%",
                        100.0 * t.head,
                        100.0 * t.ensemble
                    )
                })
                .unwrap_or_default();
            eprintln!(
                "epoch {:>3} lr {:.4} train head loss {:.4} acc {:.2}%{} | {:.0} img/s, {:.0}s",
                m.epoch,
                m.lr,
                m.train_head_loss,
                100.0 * m.train_head_accuracy,
                test,
                m.images_per_second,
                m.elapsed_seconds
            );
        }
    };
    let summary = match train::run_on(&mut *cluster, &config, &run_dir, args.resume, &mut observer)
    {
        Ok(Some(s)) => s,
        Ok(None) => return Ok(()),
        Err(e) => {
            cluster.abort_job(&format!("error: {e}"));
            return Err(e.into());
        }
    };
    print_eval(&summary.test);
    println!(
        "test accuracy: {:.2}% (head), {:.2}% (ensemble); {:.0}s, {:.0} train img/s; run dir {}",
        100.0 * summary.test.head,
        100.0 * summary.test.ensemble,
        summary.wall_seconds,
        summary.images_per_second,
        run_dir.display()
    );
    Ok(())
}

fn print_eval(r: &groupwise::eval::EvalResult) {
    for (k, units) in r.units.iter().enumerate() {
        let groups: Vec<String> = units.iter().map(|a| format!("{:.2}", 100.0 * a)).collect();
        println!(
            "  boundary {k}: groups [{}]%, group mean {:.2}%",
            groups.join(", "),
            100.0 * r.boundaries[k]
        );
    }
}

fn cmd_eval(args: EvalArgs) -> Result<()> {
    let (dir, ckpt) = if args.path.is_dir() {
        (args.path.clone(), args.path.join(train::files::CHECKPOINT))
    } else {
        let dir = args
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        (dir, args.path.clone())
    };
    let config = train::read_config(&dir.join(train::files::CONFIG))
        .with_context(|| format!("{} is not a groupwise run directory", dir.display()))?;
    let mut prepared = train::prepare(&config)?;
    let progress = groupwise::checkpoint::load(&mut prepared.net, &ckpt, false)?;
    let result = groupwise::eval::evaluate(
        &prepared.net,
        std::sync::Arc::new(prepared.splits.test),
        prepared.splits.test_transform,
        config.eval_batch_size,
        config.loader_workers,
        prepared.device,
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        println!(
            "{} after {} epochs (+{} steps): {} test images",
            ckpt.display(),
            progress.epoch,
            progress.step,
            result.images
        );
        print_eval(&result);
        println!(
            "test accuracy: {:.2}% (head), {:.2}% (ensemble)",
            100.0 * result.head,
            100.0 * result.ensemble
        );
    }
    Ok(())
}

fn cmd_plan(args: PlanArgs) -> Result<()> {
    let mut c = base_config(args.preset.as_deref())?;
    args.model.apply(&mut c)?;
    let (channels, size, classes) = c.data.shape();
    let arch = c.arch(
        args.in_channels.unwrap_or(channels as i64) as usize,
        args.image_size.unwrap_or(size as i64) as usize,
        args.classes.unwrap_or(classes as i64) as usize,
    );
    let plan = c.build_plan(arch)?;
    print_plan(&c, &plan, args.json)
}

fn print_plan(c: &RunConfig, plan: &Plan, json: bool) -> Result<()> {
    let nodes = plan.nodes();
    if json {
        let out = serde_json::json!({
            "plan": plan,
            "boundaries": plan.boundary_names(),
            "nodes": nodes,
            "max_node_macs": plan.figure_max_node_macs(),
            "inference_macs": plan.inference_macs(),
            "params": plan.total_params(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let a = &plan.arch;
    println!(
        "ResNet-{} widths {:?}, input {}x{}x{}, {} classes; plan {} -> boundaries {:?}; G={}; aux input {:?}",
        a.depth(),
        a.widths,
        a.in_channels,
        a.image_size,
        a.image_size,
        a.classes,
        c.plan,
        plan.boundary_names(),
        plan.groups,
        plan.aux_input
    );
    println!(
        "{:<14} {:>12} {:>12} {:>12} {:>10}  layers",
        "node", "trunk MACs", "clf MACs", "total MACs", "params"
    );
    for n in &nodes {
        let name = match n.kind {
            groupwise::plan::cost::NodeKind::Unit { module, group } => {
                format!("unit {module}.{group}")
            }
            groupwise::plan::cost::NodeKind::TailColumn { group } => format!("tail {group}"),
            groupwise::plan::cost::NodeKind::Head => "head".into(),
        };
        let layers: Vec<String> = n
            .layers
            .iter()
            .map(|&(s, b)| {
                if s == 0 {
                    "stem".into()
                } else {
                    format!("{s}.{b}")
                }
            })
            .collect();
        println!(
            "{:<14} {:>12.4e} {:>12.4e} {:>12.4e} {:>10}  {}",
            name,
            n.trunk.macs as f64,
            n.classifier.macs as f64,
            n.total().macs as f64,
            n.total().params,
            layers.join(" ")
        );
    }
    println!(
        "max node (paper's figure conventions): {:.4e} MACs; inference: {:.4e} MACs; parameters: {}",
        plan.figure_max_node_macs() as f64,
        plan.inference_macs() as f64,
        plan.total_params()
    );
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub(crate) fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    train::write_atomic(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// A preset name as one path component: `short/resnet32-e2e` -> `short-resnet32-e2e`, a file by its
/// stem.
fn preset_label(preset: &str) -> String {
    if preset.ends_with(".toml") {
        Path::new(preset)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "preset".into())
    } else {
        preset.replace('/', "-")
    }
}

/// Overwrites `dst` with the flag's value when the flag was given.
fn set<T: Clone>(dst: &mut T, src: &Option<T>) {
    if let Some(v) = src {
        *dst = v.clone();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => cmd_train(*a),
        Command::Eval(a) => cmd_eval(a),
        Command::Plan(a) => cmd_plan(a),
        Command::Bench(a) => bench::run(a),
        Command::Presets(a) => cmd_presets(a),
        Command::Sweep(a) => sweep::run(*a),
        Command::Report(a) => report::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
