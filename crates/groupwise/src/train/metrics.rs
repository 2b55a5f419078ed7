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

/// `metrics.jsonl` as read back ([`RunDir::read_metrics`](super::RunDir::read_metrics)): its
/// complete lines, and the number of a last line cut short.
///
/// The trainer appends one line per epoch; a run killed (or out of disk space) while appending
/// leaves the last line's JSON unfinished. That line is not an error: it is skipped and reported in
/// [`MetricsLog::cut_short`] (the report warns, a resume drops it). A line that does not parse
/// anywhere else, or a last line that is complete but wrong, is an error naming its number.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricsLog {
    /// Every complete line's metrics, in file order.
    pub epochs: Vec<EpochMetrics>,
    /// Each complete line as written.
    lines: Vec<String>,
    /// The number (1-based) of a last line whose JSON ends early, which is skipped.
    pub cut_short: Option<usize>,
}

/// A line of `metrics.jsonl` that is not an epoch's metrics.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct BadLine {
    /// Its number (1-based).
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

impl MetricsLog {
    /// Parses the bytes of a `metrics.jsonl` (blank lines are ignored).
    pub fn parse(bytes: &[u8]) -> Result<MetricsLog, BadLine> {
        let lines: Vec<(usize, &[u8])> = bytes
            .split(|&b| b == b'\n')
            .enumerate()
            .map(|(i, l)| (i + 1, l))
            .filter(|(_, l)| !l.trim_ascii().is_empty())
            .collect();
        let mut log = MetricsLog::default();
        for (i, &(number, line)) in lines.iter().enumerate() {
            match serde_json::from_slice::<EpochMetrics>(line) {
                Ok(m) => {
                    log.epochs.push(m);
                    log.lines.push(String::from_utf8_lossy(line).into_owned());
                }
                Err(e) if e.is_eof() && i + 1 == lines.len() => log.cut_short = Some(number),
                Err(e) => {
                    return Err(BadLine {
                        line: number,
                        reason: e.to_string(),
                    })
                }
            }
        }
        Ok(log)
    }

    /// The complete lines of epochs up to `epoch`, as written, each ending in a newline (what a
    /// resume from a checkpoint after `epoch` keeps).
    pub fn text_through(&self, epoch: usize) -> String {
        self.epochs
            .iter()
            .zip(&self.lines)
            .filter(|(m, _)| m.epoch <= epoch)
            .map(|(_, l)| format!("{l}\n"))
            .collect()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_log_skips_only_a_last_line_cut_short() {
        let m = |epoch| EpochMetrics {
            epoch,
            lr: 0.1,
            steps: 3,
            train_module_loss: vec![1.0],
            train_units: Vec::new(),
            train_head_loss: 1.0,
            train_head_accuracy: 0.5,
            test: None,
            train_seconds: 1.0,
            images_per_second: 10.0,
            elapsed_seconds: 1.0,
            nodes: Vec::new(),
        };
        let [a, b] = [1, 2].map(|e| serde_json::to_string(&m(e)).unwrap());
        let parse = |text: String| MetricsLog::parse(text.as_bytes());
        let epochs = |log: &MetricsLog| log.epochs.iter().map(|m| m.epoch).collect::<Vec<_>>();
        // Blank lines, and a complete last line without its newline, are fine.
        let log = parse(format!("{a}\n\n{b}")).unwrap();
        assert_eq!((epochs(&log), log.cut_short), (vec![1, 2], None));
        assert_eq!(log.text_through(1), format!("{a}\n"));
        assert_eq!(log.text_through(2), format!("{a}\n{b}\n"));
        // Every cut of the last line is skipped, with its number.
        for cut in 1..b.len() {
            let log = parse(format!("{a}\n\n{}", &b[..cut])).unwrap();
            assert_eq!((epochs(&log), log.cut_short), (vec![1], Some(3)), "{cut}");
        }
        // A cut line followed by another, or a complete line that is not metrics, is an error.
        let err = parse(format!("{}\n{b}\n", &a[..10])).unwrap_err();
        assert_eq!(err.line, 1);
        let err = parse(format!("{a}\n{{\"epoch\": 2}}\n")).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.reason.contains("missing field"), "{err}");
    }
}
