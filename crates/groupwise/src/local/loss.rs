//! The local loss of METHOD.md section 4: group cross-entropies plus the diversity term, and optionally
//! InfoPro's reconstruction term.

use serde::{Deserialize, Serialize};
use tch::{Kind, Reduction, Tensor};

/// Weight and temperature of the diversity term, and the optional InfoPro term.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossConfig {
    /// `lambda`, the weight of `L_div` (METHOD.md: 0.5).
    pub diversity_weight: f64,
    /// `T`, the softmax temperature inside `L_div` (METHOD.md: 3.0).
    pub temperature: f64,
    /// InfoPro's local loss (off when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infopro: Option<InfoPro>,
}

/// InfoPro's local loss (Wang et al., ICLR 2021): every auxiliary classifier gets a decoder that
/// reconstructs the input image from the same input, and unit (k, g) minimises
/// `a_k * BCE(decoder(x), image) + b_k * CE(z, y)` (+ the diversity term when G > 1), with `a_k`, `b_k`
/// moving linearly from the first boundary's weight to the last's (the reference's `ixx`, `ixy`).
/// The image is the network input mapped back to `[0, 1]` pixels.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfoPro {
    /// BCE weight `a` at the first and the last boundary (reference: 1, 1).
    pub reconstruction: [f64; 2],
    /// CE weight `b` at the first and the last boundary (reference: 1, 1).
    pub classification: [f64; 2],
    /// Hidden channels of the decoder (reference: 12).
    pub decoder_width: i64,
}

impl Default for InfoPro {
    /// The reference's defaults: weight 1 for both terms at every depth, a 12-channel decoder.
    fn default() -> Self {
        InfoPro {
            reconstruction: [1.0, 1.0],
            classification: [1.0, 1.0],
            decoder_width: 12,
        }
    }
}

impl InfoPro {
    /// `(a_k, b_k)` at boundary `k` of `m`: linear in `k / (m - 1)` (0 with one boundary).
    pub fn weights(&self, k: usize, m: usize) -> (f64, f64) {
        let r = if m > 1 {
            k as f64 / (m - 1) as f64
        } else {
            0.0
        };
        let lerp = |w: [f64; 2]| w[0] * (1.0 - r) + w[1] * r;
        (lerp(self.reconstruction), lerp(self.classification))
    }
}

impl Default for LossConfig {
    /// The paper's values.
    fn default() -> Self {
        LossConfig {
            diversity_weight: 0.5,
            temperature: 3.0,
            infopro: None,
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

/// Mean binary cross-entropy of a reconstruction `pred` in `(0, 1)` against `target` in `[0, 1]`
/// (PyTorch's `BCELoss`, log clamped at -100).
pub fn reconstruction(pred: &Tensor, target: &Tensor) -> Tensor {
    pred.binary_cross_entropy::<Tensor>(target, None, Reduction::Mean)
}

/// Number of rows of `logits` whose argmax equals the label.
pub fn correct(logits: &Tensor, labels: &Tensor) -> i64 {
    logits
        .argmax(1, false)
        .eq_tensor(labels)
        .sum(Kind::Int64)
        .int64_value(&[])
}
