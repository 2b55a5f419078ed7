//! Raw flags to what a run uses: a validated [`RunConfig`] (a preset or a replayed `config.json`,
//! with the flags that were given on top) and the node runtime (ripgrep's low args -> high args).

use anyhow::{bail, Context, Result};

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
    /// given; validated.
    pub fn resolve(&self) -> Result<RunConfig> {
        let mut c = match (&self.config, &self.run_dir) {
            (Some(path), _) => train::run_dir::read_json(path, "config")?,
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

impl RuntimeArgs {
    /// The node runtime of these flags.
    pub fn runtime(&self) -> Result<parallel::Runtime> {
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
            fault: self.inject_fault,
        })
    }

    /// Where the run's nodes live: this process, or (feature `mpi`) the job's MPI ranks.
    pub fn cluster(&self) -> Result<Box<dyn parallel::Cluster>> {
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

/// Overwrites `dst` with the flag's value when the flag was given.
fn set<T: Clone>(dst: &mut T, src: &Option<T>) {
    if let Some(v) = src {
        *dst = v.clone();
    }
}
