//! The local loss of METHOD.md section 4: group cross-entropies plus the diversity term.

use serde::{Deserialize, Serialize};
use tch::{Kind, Reduction, Tensor};

/// Weight and temperature of the diversity term.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossConfig {
    /// `lambda`, the weight of `L_div` (METHOD.md: 0.5).
    pub diversity_weight: f64,
    /// `T`, the softmax temperature inside `L_div` (METHOD.md: 3.0).
    pub temperature: f64,
}

impl Default for LossConfig {
    /// The paper's values.
    fn default() -> Self {
        LossConfig {
            diversity_weight: 0.5,
            temperature: 3.0,
        }
    }
}

/// Mean cross-entropy of `logits` `[B, classes]` against `labels` `[B]`.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Tensor {
    logits.cross_entropy_loss::<Tensor>(labels, None, Reduction::Mean, -100, 0.0)
}

/// The rows `p_g` of the diversity term: softmax(z/T), true class zeroed, renormalised to sum 1
/// (+1e-8), L2-normalised (+1e-8 under the root). `[B, classes] -> [B, classes]`.
fn diversity_rows(logits: &Tensor, labels: &Tensor, temperature: f64) -> Tensor {
    let kind = logits.kind();
    let p = (logits / temperature).softmax(1, kind);
    let keep: Tensor = 1.0 - labels.one_hot(p.size()[1]).to_kind(kind);
    let p: Tensor = p * keep;
    let p = &p / (p.sum_dim_intlist(1, true, kind) + 1e-8);
    &p / (p.square().sum_dim_intlist(1, true, kind) + 1e-8).sqrt()
}

/// `L_div` over the G logits of one boundary (0 when G = 1):
/// `sum over g != h, over the batch b, of <p_g[b], p_h[b]> / (B * G * (G-1))`.
///
/// Gradients flow into whichever logits carry them; a worker passes its own logits live and the other
/// groups' detached, which gives its exact gradient of the full term (METHOD.md section 4).
pub fn diversity(logits: &[Tensor], labels: &Tensor, temperature: f64) -> Tensor {
    let g = logits.len() as i64;
    let batch = labels.size()[0];
    if g < 2 {
        return Tensor::zeros([], (Kind::Float, labels.device()));
    }
    let kind = logits[0].kind();
    let rows: Vec<Tensor> = logits
        .iter()
        .map(|z| diversity_rows(z, labels, temperature))
        .collect();
    // sum_{g != h} <p_g, p_h> = |sum_g p_g|^2 - sum_g |p_g|^2, per sample.
    let total = rows
        .iter()
        .skip(1)
        .fold(rows[0].shallow_clone(), |a, r| a + r);
    let cross = total.square().sum(kind)
        - rows
            .iter()
            .map(|r| r.square().sum(kind))
            .fold(Tensor::zeros([], (kind, labels.device())), |a, s| a + s);
    cross / (batch * g * (g - 1)) as f64
}

/// Number of rows of `logits` whose argmax equals the label.
pub fn correct(logits: &Tensor, labels: &Tensor) -> i64 {
    logits
        .argmax(1, false)
        .eq_tensor(labels)
        .sum(Kind::Int64)
        .int64_value(&[])
}
