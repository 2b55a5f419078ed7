//! What a run records: per-epoch [`EpochMetrics`] (a `metrics.jsonl` line), the final [`Summary`], and
//! the accumulator that sums a segment's per-step statistics into them.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::eval::EvalResult;
use crate::local::{Network, StepStats};
use crate::parallel::NodeTiming;

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

/// Sums of per-step statistics over an epoch.
pub(super) struct Accumulator {
    /// Per unit: sums of cross-entropy, diversity, correct, reconstruction.
    units: Vec<Vec<(f64, f64, i64, f64)>>,
    head_loss: f64,
    head_correct: i64,
    pub(super) images: usize,
    steps: usize,
}

impl Accumulator {
    pub(super) fn new(net: &Network) -> Self {
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

    pub(super) fn add(&mut self, s: &StepStats) {
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
    pub(super) fn finish(
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
