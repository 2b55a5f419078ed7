//! Raw flags to what a run uses: a validated [`RunConfig`] (a preset or a replayed `config.json`,
//! with the flags that were given on top) and the node runtime (ripgrep's low args -> high args).

use anyhow::{bail, Context, Result};
use tch::Device;

use groupwise::data::{self, DatasetKind};
use groupwise::device::DeviceChoice;
use groupwise::parallel;
use groupwise::plan::AuxInput;
use groupwise::schedule::Schedule;
use groupwise::train::{self, RunConfig, RunDir};

use crate::args::{
    AuxKind, DeviceArg, ModelArgs, RuntimeArgs, ScheduleKind, TrainArgs, TransportArg, WorkersArg,
};
use crate::presets;

/// The preset `preset` (default `quick`), the config `train` and `plan` start from.
pub fn base_config(preset: Option<&str>) -> Result<RunConfig> {
    presets::preset(preset.unwrap_or("quick")).context("--preset")
}

impl ModelArgs {
    /// Overwrites `c`'s model, plan and dataset with the flags that were given.
    pub fn apply(&self, c: &mut RunConfig) -> Result<()> {
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
    /// The run's config: `--config`, the run's own on `--resume`, else the preset; then every flag
    /// given; paths made absolute; validated. (`--max-steps` is not part of it: it limits one
    /// invocation, see [`groupwise::train::Invocation`].)
    pub fn resolve(&self) -> Result<RunConfig> {
        let mut c = match (&self.config, &self.run_dir) {
            (Some(path), _) => train::run_dir::read_config_file(path)?,
            // Resuming continues the run's own settings.
            (None, Some(dir)) if self.resume => RunDir::new(dir).read_config()?,
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
        if self.init_from.is_some() {
            c.init_from = self.init_from.clone();
        }
        c.schedule = match (self.schedule, &c.schedule) {
            (Some(ScheduleKind::Step), _) | (None, Schedule::Step { .. }) => {
                if self.warmup_epochs.is_some() {
                    bail!("--warmup-epochs only applies with --schedule cosine");
                }
                let (m0, g0) = match &c.schedule {
                    Schedule::Step { milestones, gamma } => (milestones.clone(), *gamma),
                    // Decay at half and three quarters of the run; short runs keep fewer.
                    _ => {
                        let mut m: Vec<usize> = [c.epochs / 2, c.epochs * 3 / 4]
                            .into_iter()
                            .filter(|&m| m >= 1)
                            .collect();
                        m.dedup();
                        (m, 0.1)
                    }
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
        let c = c.with_absolute_paths()?;
        c.validate()?;
        self.runtime.runtime().validate(nominal_device(c.device))?;
        Ok(c)
    }
}

/// The libtorch device `choice` names (CUDA: the first GPU), without loading CUDA or checking that
/// it is there ([`groupwise::device::resolve`] does, when the run starts): what the runtime flags
/// are checked against before anything runs.
pub fn nominal_device(choice: DeviceChoice) -> Device {
    match choice {
        DeviceChoice::Cpu => Device::Cpu,
        DeviceChoice::Cuda => Device::Cuda(0),
    }
}

impl RuntimeArgs {
    /// The node runtime of these flags, checked ([`parallel::Runtime::validate`]) where the run's
    /// device is known: [`TrainArgs::resolve`], a sweep's start, and the cluster's start.
    pub fn runtime(&self) -> parallel::Runtime {
        parallel::Runtime {
            workers: match self.workers {
                WorkersArg::Threads => parallel::Workers::Threads,
                WorkersArg::Sequential => parallel::Workers::Sequential,
            },
            worker_threads: self.worker_threads,
            placement: self.placement.placement.clone(),
            threads_per_worker: self.threads_per_worker,
            pipeline_depth: self.pipeline_depth,
            devices: self.devices.clone().unwrap_or_default(),
            fault: self.inject_fault,
        }
    }

    /// Where the run's nodes live: this process, or (feature `mpi`) the job's MPI ranks.
    pub fn cluster(&self) -> Result<Box<dyn parallel::Cluster>> {
        let runtime = self.runtime();
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

/// Overwrites `dst` with the flag's value when the flag was given.
fn set<T: Clone>(dst: &mut T, src: &Option<T>) {
    if let Some(v) = src {
        *dst = v.clone();
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::args::{Cli, Command};

    /// `groupwise train FLAGS` resolved as the command resolves it: the config, then the runtime
    /// flags against its device; the error as the user reads it (`{:#}`).
    fn resolve(flags: &[&str]) -> Result<(), String> {
        let cli = Cli::try_parse_from(["groupwise", "train"].iter().chain(flags))
            .map_err(|e| e.to_string())?;
        let Command::Train(args) = cli.command else {
            unreachable!("parsed a train command")
        };
        args.resolve().map(drop).map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn settings_that_used_to_train_wrongly_are_errors_naming_the_flag() {
        let smoke = ["--preset", "smoke"];
        for (flags, want) in [
            (
                &["--synthetic", "16,1,10,0,64"][..],
                "--synthetic 16,1,10,0,64: training images 0 must be at least 1",
            ),
            (
                &["--train-subset", "0"],
                "--train-subset 0 must be at least 1",
            ),
            (&["--gamma", "-1"], "--gamma -1 must be a finite number > 0"),
            (&["--momentum", "5"], "--momentum 5 must be in [0, 1)"),
            (&["--weight-decay", "-1"], "--weight-decay -1 must be"),
            (
                &["--milestones", "3,2"],
                "--milestones 3,2 must be strictly increasing",
            ),
            (
                &["--temperature", "0"],
                "--temperature 0 must be a finite number > 0",
            ),
            (
                &["--threads", "100000"],
                "--threads 100000 must be between 0 and",
            ),
            (
                &["--devices", "0,1"],
                "--devices 0,1 places nodes on GPUs and needs --device cuda",
            ),
            (
                &["--threads-per-worker", "100000"],
                "--threads-per-worker 100000 must be between 1",
            ),
            (
                &["--pipeline-depth", "100000000"],
                "--pipeline-depth 100000000 must be between 1 and 64",
            ),
            (
                &["--pipeline-depth", "0"],
                "--pipeline-depth 0 must be between 1 and 64",
            ),
            (
                &["--warmup-epochs", "2"],
                "--warmup-epochs only applies with --schedule cosine",
            ),
            (
                &["--schedule", "cosine", "--warmup-epochs", "1"],
                "--warmup-epochs 1 must be below --epochs 1",
            ),
        ] {
            let flags: Vec<&str> = smoke.iter().chain(flags).copied().collect();
            let err = resolve(&flags).expect_err(&flags.join(" "));
            assert!(
                err.contains(want),
                "{}: `{err}` lacks `{want}`",
                flags.join(" ")
            );
        }
        resolve(&smoke).unwrap();
    }

    #[test]
    fn default_step_milestones_fit_short_runs() {
        // --schedule step without --milestones on a cosine preset: decay at E/2 and 3E/4, keeping
        // only the epochs that exist.
        for epochs in ["1", "2", "3", "160"] {
            let flags = [
                "--preset",
                "paper",
                "--epochs",
                epochs,
                "--schedule",
                "step",
            ];
            resolve(&flags).unwrap_or_else(|e| panic!("--epochs {epochs}: {e}"));
        }
    }
}
