//! The command line as clap types: one struct of flags per subcommand, and the flag groups that
//! several share ([`ModelArgs`], [`RuntimeArgs`]). Every `///` on a flag is its `--help` text.
//!
//! These are raw flags; `config` turns them into a validated `RunConfig` and runtime. Real-valued
//! flags take negative numbers (`--gamma -1`), so that validation names the allowed range instead of
//! clap reading `-1` as an unknown flag.
//!
//! Past 600 lines: it is the whole command line, every flag with its help text, and one file keeps
//! the flags that several subcommands share next to the subcommands that share them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use groupwise::data::DatasetKind;
use groupwise::parallel;
use groupwise::plan::PlanSpec;

/// Local learning with neuron groups (GN-DGL): train a ResNet as K modules x G groups of local units.
#[derive(Parser)]
#[command(version, about)]
pub struct Cli {
    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `groupwise`.
#[derive(Subcommand)]
pub enum Command {
    /// Train a network (with no arguments: the `quick` preset, GN-DGL K=4 G=2 on Fashion-MNIST).
    ///
    /// SIGINT (Ctrl-C) or SIGTERM stops the run after the steps in flight, writes the checkpoint
    /// there, prints the command that continues it (--resume) and exits with 130 or 143; a second
    /// signal ends it at once. Under MPI, rank 0 decides for the whole job.
    Train(Box<TrainArgs>),
    /// Evaluate a saved run directory or checkpoint on its test split.
    Eval(EvalArgs),
    /// Print the K x G partition: every node's layers, parameters and forward MACs per image; time
    /// every node here (--profile), predict the step on N workers (--simulate), or search the
    /// profiled configurations for the fastest (--search).
    Plan(Box<PlanArgs>),
    /// Time a training step against PyTorch (same step, same process tree, same run).
    Bench(BenchArgs),
    /// List the presets under configs/ (the paper's grid, its short-budget variants, quick, smoke).
    Presets(PresetsArgs),
    /// Run a set of configurations (presets x grid), skipping finished runs and resuming
    /// interrupted ones; writes a report at the end.
    Sweep(Box<SweepArgs>),
    /// Results table (Markdown, CSV) and plots (SVG, PNG) of finished or running run directories.
    Report(ReportArgs),
}

/// `--placement`: as typed (passed on to a sweep's runs) and as read.
#[derive(Clone, Debug, PartialEq)]
pub struct PlacementArg {
    /// What the user typed.
    pub spec: String,
    /// What it means (a file's costs read once, here).
    pub placement: parallel::Placement,
}

impl Default for PlacementArg {
    fn default() -> Self {
        PlacementArg {
            spec: "measured".into(),
            placement: parallel::Placement::Measured,
        }
    }
}

impl std::str::FromStr for PlacementArg {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        let placement = match spec {
            "measured" => parallel::Placement::Measured,
            "macs" => parallel::Placement::Macs,
            path => crate::profile_file::read(std::path::Path::new(path))?,
        };
        Ok(PlacementArg {
            spec: spec.to_string(),
            placement,
        })
    }
}

/// Flags of `groupwise presets`.
#[derive(Args)]
pub struct PresetsArgs {
    /// Print this preset's resolved config (its bases applied) as TOML instead of the list.
    #[arg(long)]
    pub show: Option<String>,
    /// With --show: print it as JSON, the form of a run's config.json (`train --config` replays it).
    #[arg(long, requires = "show")]
    pub json: bool,
}

/// `--aux-input`: what auxiliary classifiers read.
#[derive(Clone, Copy, ValueEnum)]
pub enum AuxKind {
    /// All C channels; only the own slice carries gradient (the paper's main setting).
    StopGradient,
    /// The group's own C/G channels only.
    Isolated,
    /// Own slice plus a window of every other group's slice (see --aux-ratio).
    Partial,
}

/// `--schedule`: the learning-rate schedule.
#[derive(Clone, Copy, ValueEnum)]
pub enum ScheduleKind {
    /// Warm-up then cosine (METHOD.md section 5).
    Cosine,
    /// Multiply by --gamma at each of --milestones.
    Step,
}

/// `--device`.
#[derive(Clone, Copy, ValueEnum)]
pub enum DeviceArg {
    /// The CPU.
    Cpu,
    /// The first CUDA GPU.
    Cuda,
}

/// Model, plan and data flags shared by `train` and `plan`; unset flags keep the preset's value.
#[derive(Args, Clone, Default)]
pub struct ModelArgs {
    /// Depth of the CIFAR ResNet-(6n+2): 20, 32, 44, 56, 110 (any 6n+2 works).
    #[arg(long)]
    pub depth: Option<usize>,
    /// Widths w0,w1,w2,w3 (the paper's ResNet-32x2 is 32,32,64,128).
    #[arg(long, value_delimiter = ',')]
    pub widths: Option<Vec<i64>>,
    /// Module plan: 1 (end-to-end), 1A, K (2, 3, 4, 8, 16 from the paper's table for ResNet-32;
    /// cost-balanced otherwise) or explicit boundaries like 1:2,2:1,3:0,3:4.
    #[arg(long)]
    pub plan: Option<PlanSpec>,
    /// Neuron groups G (must divide every width).
    #[arg(long)]
    pub groups: Option<i64>,
    /// What auxiliary classifiers read.
    #[arg(long, value_enum)]
    pub aux_input: Option<AuxKind>,
    /// Window ratio r in (0,1) for --aux-input partial.
    #[arg(long, allow_negative_numbers = true)]
    pub aux_ratio: Option<f64>,
    /// Dataset.
    #[arg(long, value_parser = parse_dataset)]
    pub dataset: Option<DatasetKind>,
}

/// Flags of `groupwise train`.
#[derive(Args, Default)]
pub struct TrainArgs {
    /// Start from a preset: a name under configs/ (quick (default), short, paper, smoke,
    /// short/resnet32-g2-k4, ...; `groupwise presets` lists them) or a .toml file.
    #[arg(long)]
    pub preset: Option<String>,
    /// Start from an earlier run's config.json (replays it exactly; other flags override it).
    #[arg(long, conflicts_with = "preset")]
    pub config: Option<PathBuf>,
    /// Run directory (default: runs/<preset>-<unix time>). Locked while a run trains there: a second
    /// `groupwise train` in it is refused, naming the process that holds it.
    // The text is also `--help`'s, where <...> reads as a placeholder, not HTML.
    #[allow(rustdoc::invalid_html_tags)]
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Continue the run in --run-dir from its checkpoint, exactly where it stopped (after an epoch,
    /// --max-steps, Ctrl-C or a kill), with the run's own config.json: only --max-steps, --data-dir
    /// and the runtime flags may be given. A finished run is left as it is ("nothing to do").
    #[arg(long, requires = "run_dir", conflicts_with = "preset")]
    pub resume: bool,
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    /// Directory with the dataset files (default for fashion-mnist: /usr/share/datasets/fashion-mnist);
    /// stored as an absolute path. With --resume: where the run's dataset is now, if it moved.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Train on a seeded random subset of this many training images.
    #[arg(long)]
    pub train_subset: Option<usize>,
    /// Synthetic data: image size, channels, classes, train and test counts, e.g. 32,3,10,1000,200.
    #[arg(long, value_delimiter = ',')]
    pub synthetic: Option<Vec<usize>>,
    /// Weight lambda of the diversity term (0 disables it).
    #[arg(long, allow_negative_numbers = true)]
    pub diversity_weight: Option<f64>,
    /// Temperature T of the diversity term.
    #[arg(long, allow_negative_numbers = true)]
    pub temperature: Option<f64>,
    /// Add InfoPro's local loss (Wang et al., ICLR 2021): a decoder per auxiliary classifier
    /// reconstructs the input image (BCE) beside the cross-entropy, with the reference's weights (1, 1);
    /// a preset's `[loss.infopro]` sets other weights.
    #[arg(long)]
    pub infopro: bool,
    /// Base learning rate lr0.
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// Learning-rate schedule.
    #[arg(long, value_enum)]
    pub schedule: Option<ScheduleKind>,
    /// Warm-up epochs of the cosine schedule (the paper: 10).
    #[arg(long)]
    pub warmup_epochs: Option<usize>,
    /// Epochs at which the step schedule decays, e.g. 80,120.
    #[arg(long, value_delimiter = ',')]
    pub milestones: Option<Vec<usize>>,
    /// Decay factor of the step schedule.
    #[arg(long, allow_negative_numbers = true)]
    pub gamma: Option<f64>,
    /// SGD momentum.
    #[arg(long, allow_negative_numbers = true)]
    pub momentum: Option<f64>,
    /// Weight decay on every parameter.
    #[arg(long, allow_negative_numbers = true)]
    pub weight_decay: Option<f64>,
    /// Plain momentum instead of Nesterov.
    #[arg(long)]
    pub no_nesterov: bool,
    /// Epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Training batch size.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Evaluation batch size.
    #[arg(long)]
    pub eval_batch_size: Option<usize>,
    /// Seed of weights, data order and augmentation.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Device.
    #[arg(long, value_enum)]
    pub device: Option<DeviceArg>,
    /// libtorch intra-op threads (0: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Data-loading threads.
    #[arg(long)]
    pub loader_workers: Option<usize>,
    /// Disable train-time augmentation.
    #[arg(long)]
    pub no_augment: bool,
    /// Keep the training set in file order.
    #[arg(long)]
    pub no_shuffle: bool,
    /// Train at most this many steps in this invocation, counted from where the run stands (a fresh
    /// run: from step 0). Not part of the run: it is not stored in config.json, the checkpoint is
    /// written where it stops, and `--resume` (with or without a new --max-steps) continues from
    /// there; the run is finished only at its last epoch.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Initial weights from a safetensors checkpoint (parameter names as in `groupwise` checkpoints).
    #[arg(long)]
    pub init_from: Option<PathBuf>,
    /// Evaluate every this many epochs (always after the last).
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// No progress bar (one line per epoch only).
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub(crate) runtime: RuntimeArgs,
}

/// `--workers`: how the nodes of one process run.
#[derive(Clone, Copy, Default, ValueEnum)]
pub enum WorkersArg {
    /// One pipelined worker thread per node (K x G units, final columns, head).
    #[default]
    Threads,
    /// Every node in turn in one thread (the reference schedule).
    Sequential,
}

/// `--transport`: where the nodes live.
#[derive(Clone, Copy, Default, ValueEnum)]
pub enum TransportArg {
    /// All nodes in this process.
    #[default]
    Local,
    /// Nodes spread over MPI ranks: `mpirun -np N groupwise train --transport mpi ...` (build with
    /// `--features mpi`).
    Mpi,
}

/// How the nodes run (none of it changes the result; all may change on --resume).
#[derive(Args, Clone, Default)]
pub struct RuntimeArgs {
    /// Run nodes as pipelined threads (default) or one after the other.
    #[arg(long, value_enum, default_value_t)]
    pub workers: WorkersArg,
    /// Where the nodes live: this process, or MPI ranks.
    #[arg(long, value_enum, default_value_t)]
    pub transport: TransportArg,
    /// Worker threads of this process, each running a contiguous run of nodes in pipeline order
    /// (default: one per node, which the kernel's scheduler balances over the cores; one per GPU with
    /// --devices).
    #[arg(long)]
    pub worker_threads: Option<usize>,
    /// What nodes are balanced by across worker threads (and MPI ranks), when a worker runs several:
    /// `measured` (default: each node's step time, measured in the run's first 4 steps on one worker;
    /// MPI ranks by MACs),
    /// `macs` (the plan's forward MACs), or a file written by `groupwise plan --profile --json`.
    #[arg(long, default_value = "measured", value_name = "measured|macs|FILE")]
    pub placement: PlacementArg,
    /// libtorch intra-op threads per worker (default: cores / workers on this machine, at least 1);
    /// with --workers sequential, of the one thread that trains every node (default: --threads).
    #[arg(long)]
    pub threads_per_worker: Option<usize>,
    /// Messages in flight per link between nodes (back-pressure; 2 = double buffering).
    #[arg(long, default_value_t = 2)]
    pub pipeline_depth: usize,
    /// CUDA devices to place nodes on, round-robin in node order, e.g. 0,1,2,3 (with --device cuda;
    /// default: the first GPU).
    #[arg(long, value_delimiter = ',')]
    pub devices: Option<Vec<usize>>,
    /// Fail node NODE at global step STEP (`m1.g0@8`): tests and demonstrations of the failure path
    /// (README, "Failures"). Hidden: it is not a training setting.
    #[arg(long, hide = true, value_name = "NODE@STEP")]
    pub inject_fault: Option<parallel::Fault>,
}

impl RuntimeArgs {
    /// The same settings as `groupwise train` flags (the local transport), for the runs a sweep
    /// starts.
    pub fn to_args(&self) -> Vec<String> {
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
        if let Some(t) = self.worker_threads {
            a.extend(["--worker-threads".to_string(), t.to_string()]);
        }
        a.extend(["--placement".to_string(), self.placement.spec.clone()]);
        if let Some(d) = &self.devices {
            let list: Vec<String> = d.iter().map(usize::to_string).collect();
            a.extend(["--devices".to_string(), list.join(",")]);
        }
        a
    }
}

/// Flags of `groupwise eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// A run directory, or a checkpoint file inside one (read only: a run may be training there).
    pub path: PathBuf,
    /// Where the run's dataset is now, if it moved since the run was trained (only the location may
    /// differ from the run's config.json).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Write the result as JSON to stdout.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `groupwise plan`.
#[derive(Args)]
pub struct PlanArgs {
    /// Start from a preset (default quick; a name under configs/ or a .toml file) for the values not
    /// given.
    #[arg(long)]
    pub preset: Option<String>,
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    /// Input channels (default: the dataset's).
    #[arg(long)]
    pub in_channels: Option<i64>,
    /// Image size (default: the dataset's).
    #[arg(long)]
    pub image_size: Option<i64>,
    /// Classes (default: the dataset's).
    #[arg(long)]
    pub classes: Option<i64>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Time every node's training step on this machine (random images of the input shape, one worker
    /// thread running the nodes in turn, after warm-up): ms per step, its forward / backward / update
    /// split and GMAC/s per node, beside the end-to-end network's GMAC/s measured in the same run.
    /// `--json` output is what `train --placement FILE` reads.
    #[arg(long)]
    pub profile: bool,
    /// With --profile: images per step.
    #[arg(long, default_value_t = 128, requires = "profile")]
    pub batch: i64,
    /// With --profile: timed steps.
    #[arg(long, default_value_t = 10, requires = "profile")]
    pub steps: usize,
    /// With --profile: untimed warm-up steps.
    #[arg(long, default_value_t = 2, requires = "profile")]
    pub warmup: usize,
    /// With --profile: libtorch intra-op threads (what each worker thread will have in training).
    #[arg(long, default_value_t = 1, requires = "profile")]
    pub threads: usize,
    /// With --profile: time N copies of the plan at once, each on a worker thread of its own, and
    /// report the mean: the nodes under the load of N busy workers (shared caches and memory
    /// bandwidth), which is what a run on N workers sees; 1: every node alone.
    #[arg(long, default_value_t = 1, requires = "profile")]
    pub copies: usize,
    /// With --profile: leave out the end-to-end reference.
    #[arg(long, requires = "profile")]
    pub no_reference: bool,
    /// Predict this plan's training step on N workers from PROFILE (written by `groupwise plan
    /// --profile --json` for this plan, on the machine to predict or one like it): an event-driven
    /// simulation of the runtime's schedule (bounded queues, back-pressure, fill and drain, peers'
    /// exchanges). Prints step time, images/s, speed-up over end-to-end and over the sequential
    /// schedule, each worker's busy share and the critical node.
    #[arg(long, value_name = "PROFILE", conflicts_with = "profile")]
    pub simulate: Option<PathBuf>,
    /// Search the configurations profiled in DIR (files written by `plan --profile --json`, one per
    /// plan, G and aux input; `scripts/profile_grid.sh` writes ResNet-32's grid) for the fastest on
    /// --workers N: each simulated with its nodes placed by measured time and by MACs, the better
    /// kept; prints every configuration by predicted step time with its speed-up over end-to-end,
    /// max node MACs, parameters and memory per node, and marks the Pareto front. The model flags
    /// give the architecture; plan, G and aux input come from each profile.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["profile", "simulate"])]
    pub search: Option<PathBuf>,
    /// With --search: a report's results.csv (`groupwise report`): adds each configuration's
    /// measured head accuracy (mean over its runs).
    #[arg(long, value_name = "CSV", requires = "search")]
    pub accuracy: Option<PathBuf>,
    /// With --search: also plot every configuration's predicted speed-up on 1, 2, 4, ..., 256 workers
    /// (PNG).
    #[arg(long, value_name = "PNG", requires = "search")]
    pub plot: Option<PathBuf>,
    /// With --search --accuracy: pick the fastest configuration whose accuracy reaches this (in %).
    #[arg(long, value_name = "PERCENT", requires = "accuracy")]
    pub target_accuracy: Option<f64>,
    /// With --simulate or --search: worker counts to predict (default: --simulate 1,2,4,...,256;
    /// --search the cores here).
    #[arg(long, value_delimiter = ',')]
    pub workers: Option<Vec<usize>>,
    /// With --simulate or --search: `threads` (worker threads of one process: messages are handed
    /// over) or `mpi` (a process per worker: every message crosses --link).
    #[arg(long, value_enum, default_value_t = SimRuntime::Threads)]
    pub runtime: SimRuntime,
    /// With --runtime mpi: the link between processes as LATENCY_US,GBYTES_PER_S (default
    /// 1000,2: MPI over shared memory as measured here, see the README).
    #[arg(long, value_name = "LATENCY_US,GBPS")]
    pub link: Option<String>,
    /// With --simulate or --search: messages in flight per channel (train's --pipeline-depth).
    #[arg(long, default_value_t = 2)]
    pub pipeline_depth: usize,
    /// With --simulate or --search: steps of the simulated segment (the pipeline fills and drains
    /// once in it).
    #[arg(long, default_value_t = 100)]
    pub sim_steps: usize,
    /// With --simulate: every worker's speed relative to the profiled machine, comma-separated (one
    /// value applies to all; default 1).
    #[arg(long, value_delimiter = ',', requires = "simulate")]
    pub speeds: Option<Vec<f64>>,
    /// With --simulate: draw a Gantt chart of the last simulated steps (PNG; the first worker count
    /// of --workers).
    #[arg(long, value_name = "PNG", requires = "simulate")]
    pub gantt: Option<PathBuf>,
    /// With --simulate: compare with the run in RUN_DIR (trained on worker threads or MPI ranks; its
    /// trace.json holds its last epoch's last steps): the run's placement, pipeline depth and epoch
    /// simulated, measured vs predicted step and each node's compute in the run vs the profile; with
    /// --gantt, the run's timeline drawn above the simulated one. The run's own placement, runtime,
    /// pipeline depth and epoch length are what is simulated, so those flags cannot be given.
    #[arg(long, value_name = "RUN_DIR", requires = "simulate",
          conflicts_with_all = ["workers", "speeds", "runtime", "pipeline_depth", "sim_steps"])]
    pub trace: Option<PathBuf>,
    /// With --simulate or --search: the workers share N cores (one machine, each computing worker
    /// keeping the profile's intra-op threads busy): while more of them compute than there are cores
    /// for, each gets its fair share, as train's default thread per node does on fewer cores. Default:
    /// every worker has cores of its own; with --trace of a run on worker threads, the cores of the
    /// machine it ran on. With --search on worker threads, each configuration is also simulated with
    /// train's default runtime (a worker thread per node) on those cores
    #[arg(long, value_name = "N")]
    pub cores: Option<usize>,
}

/// How simulated workers talk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SimRuntime {
    /// Worker threads of one process.
    Threads,
    /// A process (MPI rank) per worker.
    Mpi,
}

/// Options of `groupwise bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// Plans to time as K:G (ResNet-32 table plans), e.g. 1:1,4:4 (default 1:1,4:1,4:2,4:4: end-to-end,
    /// DGL K=4, G=2 K=4, G=4 K=4; with --parallel 1:2,2:1,2:2).
    #[arg(long, value_delimiter = ',')]
    pub configs: Option<Vec<String>>,
    /// Batch size.
    #[arg(long, default_value_t = 128)]
    pub batch: i64,
    /// Timed steps (the median is reported).
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Rounds: in each, every configuration is timed here and in a PyTorch process of its own, a
    /// step of each in turn (so both sides see the machine at the same moments); the median over
    /// rounds of each side's median step is reported. With
    /// --parallel, each round profiles and runs every configuration again, and speed-ups,
    /// efficiencies and prediction errors are the medians of the rounds' own. Default 2; 1 with
    /// --parallel (minutes per round).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// libtorch intra-op threads for both sides (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Python with torch for the comparison (default: $GROUPWISE_PYTHON, else python3).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Skip the PyTorch comparison.
    #[arg(long)]
    pub no_torch: bool,
    /// Instead: step time of the sequential path vs pipelined threads vs MPI ranks (the built binary
    /// under mpiexec, when built with `--features mpi` and mpiexec is on PATH), per-node split and
    /// the ideal speed-up from the plan's MAC balance and from measured node times
    /// (`groupwise plan --profile`), with each runtime's efficiency against the latter. Default
    /// configs 1:2, 2:1, 2:2.
    #[arg(long)]
    pub parallel: bool,
    /// With --parallel: workers W, the threads run's worker threads and the MPI run's ranks (one
    /// worker thread each) (default: the machine's cores).
    #[arg(long, requires = "parallel")]
    pub worker_threads: Option<usize>,
    /// With --parallel: what the threads and MPI runs balance their nodes by (`train --placement`;
    /// default: the node times this bench measures first with `plan --profile`, which the simulator's
    /// prediction uses too).
    #[arg(long, value_name = "measured|macs|FILE", requires = "parallel")]
    pub placement: Option<PlacementArg>,
    /// With --parallel: the MPI run over TCP on the loopback (`--mca btl tcp,self`) instead of shared
    /// memory.
    #[arg(long, requires = "parallel")]
    pub mpi_tcp: bool,
    /// With --parallel: the MPI link the prediction assumes, LATENCY_US,GBYTES_PER_S (default: the
    /// one measured here for the transport, see `plan --simulate --link`).
    #[arg(long, value_name = "LATENCY_US,GBPS", requires = "parallel")]
    pub link: Option<String>,
    /// With --parallel: draw each threads and MPI run's last steps above the simulator's timeline of
    /// the same placement, as DIR/gantt-K4-G2-threads.png and so on (K, G and the runtime in the
    /// name; the directory is created).
    #[arg(long, value_name = "DIR", requires = "parallel")]
    pub gantt: Option<PathBuf>,
}

/// Flags of `groupwise sweep`.
#[derive(Args)]
pub struct SweepArgs {
    /// Presets to run: names under configs/ (`groupwise presets`), `*` matching any characters (e.g.
    /// 'short/resnet32-g*-k4'), or .toml files.
    pub presets: Vec<String>,
    /// A sweep file (TOML): `presets = [...]`, optional `out = "DIR"`, a `[set]` table of values for
    /// every run and a `[grid]` table of value lists (one run per combination). Flags add to it.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// An axis KEY=V1,V2,...: every preset runs once per value; repeat for a grid (the product).
    /// Dotted keys reach nested values: data.train_subset=5000,20000.
    #[arg(long = "grid", value_name = "KEY=VALUES")]
    pub grid: Vec<String>,
    /// KEY=VALUE applied to every run, e.g. epochs=1 or data.path=/data/cifar (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Directory of the sweep: one run directory per configuration, and the report (default
    /// runs/sweep, or the sweep file's `out`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Runs at once, each a `groupwise train` process (mind the cores: each run uses them all by
    /// default; pass --threads-per-worker to share).
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// List the runs and what the sweep would do with each, then stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not write OUT/report when the sweep ends.
    #[arg(long)]
    pub no_report: bool,
    /// Node runtime flags passed to every run (`--workers`, `--threads-per-worker`, ...).
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// Flags of `groupwise report`.
#[derive(Args)]
pub struct ReportArgs {
    /// Run directories; a directory of run directories (a sweep's --out) stands for all of them, in
    /// sweep order (else by name).
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Where to write report.md, results.csv and the plots.
    #[arg(long, default_value = "report")]
    pub out: PathBuf,
    /// The run (directory name) speed-ups are relative to (default: the end-to-end run, plan 1 with
    /// G=1, else the first run).
    #[arg(long)]
    pub baseline: Option<String>,
    /// TrueType font for the plots (default: DejaVu Sans from Debian's fonts-dejavu-core).
    #[arg(long)]
    pub font: Option<PathBuf>,
    /// Title of the report.
    #[arg(long)]
    pub title: Option<String>,
}

fn parse_dataset(s: &str) -> Result<DatasetKind, String> {
    s.parse::<DatasetKind>().map_err(|e| e.to_string())
}
