//! [`RunConfig`]: everything that defines a run, validated once, serialised as its `config.json`.

use std::path::PathBuf;

use crate::data::DataSpec;
use crate::device::DeviceChoice;
use crate::local::{LossConfig, SgdConfig};
use crate::model::Arch;
use crate::plan::{AuxInput, Plan, PlanError, PlanSpec};
use crate::schedule::Schedule;
use serde::{Deserialize, Serialize};
use thiserror::Error;

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

    /// Checks what can be checked without the data.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError(m));
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
