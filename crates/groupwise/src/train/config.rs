//! [`RunConfig`]: everything that defines a run, validated once, serialised as its `config.json`.

use std::path::PathBuf;

use crate::data::{DataSpec, DatasetKind};
use crate::device::DeviceChoice;
use crate::local::{LossConfig, SgdConfig};
use crate::model::Arch;
use crate::parallel::check_threads;
use crate::plan::{AuxInput, Plan, PlanError, PlanSpec};
use crate::schedule::Schedule;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Most classes synthetic data may have (its labels are `u16`).
const MAX_SYNTHETIC_CLASSES: usize = 1 << 16;

/// An invalid setting; the message names the flag or config key.
#[derive(Clone, Debug, Error, PartialEq)]
#[error("{0}")]
pub struct ConfigError(pub String);

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
    /// The plan: `1`, `1A`, K, or `stage:block,...` boundaries (a string in `config.json`).
    pub plan: PlanSpec,
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
        Ok(
            Plan::from_spec(arch, &self.plan, self.groups, self.aux_input)?
                .with_decoder(self.loss.infopro.map(|i| i.decoder_width)),
        )
    }

    /// [`RunConfig::build_plan`] on the data's declared shape ([`DataSpec::shape`]), without reading
    /// the data: what `groupwise plan` prints and what sweeps and reports cost.
    pub fn declared_plan(&self) -> Result<Plan, PlanError> {
        let (channels, size, classes) = self.data.shape();
        self.build_plan(self.arch(channels, size, classes))
    }

    /// The config with its paths (`data.path`, `init_from`) made absolute against the current
    /// directory, so that its `config.json` means the same from any directory (`groupwise eval RUN`
    /// elsewhere, a resume from another shell). Symbolic links are kept as given.
    pub fn with_absolute_paths(mut self) -> Result<Self, ConfigError> {
        let absolute = |flag: &str, p: &mut Option<PathBuf>| -> Result<(), ConfigError> {
            if let Some(path) = p {
                *path = std::path::absolute(&*path)
                    .map_err(|e| ConfigError(format!("{flag} '{}': {e}", path.display())))?;
            }
            Ok(())
        };
        absolute("--data-dir", &mut self.data.path)?;
        absolute("--init-from", &mut self.init_from)?;
        Ok(self)
    }

    /// Checks every setting that can be checked without reading the data, once, before anything
    /// runs: every message names the flag (or config key), the value and the allowed range.
    ///
    /// Settings without a rule: `seed`, `device` (checked when resolved), `augment`, `shuffle`,
    /// `sgd.nesterov`, `data.kind`, `data.seed`, and the paths `data.path` and `init_from`, which
    /// only the reading process can check (errors there name the file).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_data()?;
        // The model and the plan: blocks, widths, plan, groups, aux input.
        self.declared_plan()
            .map_err(|e| ConfigError(e.to_string()))?;
        self.validate_loss()?;
        self.validate_optimizer()?;
        let bad = |m: String| Err(ConfigError(m));
        if self.epochs == 0 {
            return bad("--epochs 0 must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("--batch-size 0 must be at least 1".into());
        }
        if self.eval_batch_size == 0 {
            return bad("--eval-batch-size 0 must be at least 1".into());
        }
        if self.eval_every == 0 {
            return bad("--eval-every 0 must be at least 1".into());
        }
        check_threads("--threads", self.threads, 0).map_err(ConfigError)?;
        check_threads("--loader-workers", self.loader_workers, 0).map_err(ConfigError)?;
        Ok(())
    }

    /// At least one training and one test image where the counts are known without reading the
    /// data (synthetic data, the training subset), and a synthetic shape the ResNets take.
    fn validate_data(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError(m));
        let d = &self.data;
        if d.train_subset == Some(0) {
            return bad("--train-subset 0 must be at least 1 (training images to use)".into());
        }
        if d.kind != DatasetKind::Synthetic {
            return Ok(());
        }
        let s = &d.synthetic;
        let flag = format!(
            "--synthetic {},{},{},{},{}",
            s.size, s.channels, s.classes, s.train, s.test
        );
        let value = |what: &str, v: usize, range: &str| {
            format!("{flag}: {what} {v} must be {range} (values: size,channels,classes,train,test)")
        };
        if s.size < 8 {
            return bad(value(
                "image size",
                s.size,
                "at least 8 (three stages and a stride-2 head)",
            ));
        }
        if s.channels == 0 {
            return bad(value("channels", s.channels, "at least 1"));
        }
        if !(2..=MAX_SYNTHETIC_CLASSES).contains(&s.classes) {
            let range = format!("between 2 and {MAX_SYNTHETIC_CLASSES}");
            return bad(value("classes", s.classes, &range));
        }
        if s.train == 0 {
            return bad(value("training images", s.train, "at least 1"));
        }
        if s.test == 0 {
            return bad(value("test images", s.test, "at least 1"));
        }
        match d.train_subset {
            Some(n) if n > s.train => bad(format!(
                "--train-subset {n} must be between 1 and {} (the synthetic training images)",
                s.train
            )),
            _ => Ok(()),
        }
    }

    /// The local loss: a non-negative diversity weight, a positive temperature, InfoPro's weights.
    fn validate_loss(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError(m));
        let l = &self.loss;
        if !(l.diversity_weight.is_finite() && l.diversity_weight >= 0.0) {
            return bad(format!(
                "--diversity-weight {} must be a finite number >= 0 (0 disables the diversity \
                 term)",
                l.diversity_weight
            ));
        }
        if !(l.temperature.is_finite() && l.temperature > 0.0) {
            return bad(format!(
                "--temperature {} must be a finite number > 0 (the diversity softmax divides the \
                 logits by it)",
                l.temperature
            ));
        }
        if let Some(i) = &l.infopro {
            let weights = i.reconstruction.iter().chain(&i.classification);
            if weights.clone().any(|w| !(w.is_finite() && *w >= 0.0)) {
                return bad(format!(
                    "loss.infopro weights reconstruction {:?} and classification {:?} must be \
                     finite numbers >= 0",
                    i.reconstruction, i.classification
                ));
            }
            if i.decoder_width < 1 {
                return bad(format!(
                    "loss.infopro.decoder_width {} must be at least 1",
                    i.decoder_width
                ));
            }
        }
        Ok(())
    }

    /// The optimizer and the learning-rate schedule.
    fn validate_optimizer(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError(m));
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("--lr {} must be a finite number > 0", self.lr));
        }
        let SgdConfig {
            momentum,
            weight_decay,
            nesterov: _,
        } = self.sgd;
        if !(0.0..1.0).contains(&momentum) {
            return bad(format!(
                "--momentum {momentum} must be in [0, 1) (0 for plain SGD)"
            ));
        }
        if !(weight_decay.is_finite() && weight_decay >= 0.0) {
            return bad(format!(
                "--weight-decay {weight_decay} must be a finite number >= 0 (0 for none)"
            ));
        }
        match &self.schedule {
            Schedule::Cosine { warmup_epochs } => {
                let w = *warmup_epochs;
                if w > 0 && w >= self.epochs {
                    return bad(format!(
                        "--warmup-epochs {w} must be below --epochs {} (0 for none): the warm-up \
                         would take the whole run",
                        self.epochs
                    ));
                }
            }
            Schedule::Step { milestones, gamma } => {
                if !(gamma.is_finite() && *gamma > 0.0) {
                    return bad(format!(
                        "--gamma {gamma} must be a finite number > 0 (the factor applied to the \
                         rate at each milestone)"
                    ));
                }
                let increasing = milestones.windows(2).all(|w| w[0] < w[1]);
                if !increasing || milestones.first() == Some(&0) {
                    let list: Vec<String> = milestones.iter().map(usize::to_string).collect();
                    return bad(format!(
                        "--milestones {} must be strictly increasing epochs >= 1",
                        list.join(",")
                    ));
                }
            }
        }
        Ok(())
    }
}

// The table of every setting's rules is long: it lives beside this file.
#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
