//! Learning-rate schedules (METHOD.md section 5), set once per epoch.

use serde::{Deserialize, Serialize};

/// How the learning rate moves over epochs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Schedule {
    /// The paper's: `c = 0.5*lr0*(1 + cos(pi*e/E))`; during the first `warmup_epochs` epochs
    /// `lr = c*(e-1)/W + 0.01*(W+1-e)/W` (W = 10 in the paper), then `lr = c`.
    Cosine {
        /// W, the warm-up length in epochs (0 for none).
        warmup_epochs: usize,
    },
    /// `lr = lr0 * gamma^(number of milestones m with m <= e)`: the classic step decay.
    Step {
        /// Epochs (1-based) from which the next decay applies.
        milestones: Vec<usize>,
        /// Decay factor.
        gamma: f64,
    },
}

impl Schedule {
    /// Learning rate of epoch `e` (1-based) of `epochs`, from base rate `lr0`.
    pub fn lr(&self, lr0: f64, e: usize, epochs: usize) -> f64 {
        match self {
            Schedule::Cosine { warmup_epochs } => {
                let c = 0.5 * lr0 * (1.0 + (std::f64::consts::PI * e as f64 / epochs as f64).cos());
                let w = *warmup_epochs;
                if e <= w {
                    let w = w as f64;
                    c * (e as f64 - 1.0) / w + 0.01 * (w + 1.0 - e as f64) / w
                } else {
                    c
                }
            }
            Schedule::Step { milestones, gamma } => {
                let passed = milestones.iter().filter(|&&m| m <= e).count();
                lr0 * gamma.powi(passed as i32)
            }
        }
    }
}
