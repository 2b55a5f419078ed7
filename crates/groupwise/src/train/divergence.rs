//! What diverged and why: the loss of a step that is not finite, named, with the setting most likely
//! at fault.

use crate::local::StepStats;
use crate::plan::NodeId;

use super::RunConfig;

/// A loss of one step that is not finite.
#[derive(Clone, Debug, PartialEq)]
pub struct Divergence {
    /// Which loss, in words: `the cross-entropy of m1.g0`, `the head's cross-entropy`, ...
    pub loss: String,
    /// Its value (NaN or infinite).
    pub value: f64,
    /// The setting most likely at fault, its value, and what to try.
    pub hint: String,
}

/// The first loss of `stats` that is not finite (`lr`: this epoch's learning rate), or `None`.
///
/// The cross-entropies (and InfoPro's reconstruction) come first: when one of them is not finite
/// the weights themselves have blown up, which is what a learning rate too large for the run does.
/// When they are all finite and only a module's diversity term is not, the weights are sound and
/// the term's `softmax(z / T)` overflowed: the temperature is at fault.
pub(super) fn find(stats: &StepStats, config: &RunConfig, lr: f64) -> Option<Divergence> {
    let units = || {
        stats.units.iter().enumerate().flat_map(|(k, u)| {
            u.iter()
                .enumerate()
                .map(move |(g, s)| (NodeId::column(k, g), s))
        })
    };
    let weights = units()
        .flat_map(|(node, s)| {
            [
                (format!("the cross-entropy of {node}"), s.cross_entropy),
                (
                    format!("InfoPro's reconstruction loss of {node}"),
                    s.reconstruction,
                ),
            ]
        })
        .chain([("the head's cross-entropy".to_string(), stats.head_loss)])
        .find(|(_, v)| !v.is_finite());
    if let Some((loss, value)) = weights {
        let hint = if lr == config.lr {
            format!(
                "--lr {} is too large for this run: try a smaller --lr",
                num(lr)
            )
        } else {
            format!(
                "the learning rate is {} this epoch (--lr {}): try a smaller --lr",
                num(lr),
                num(config.lr)
            )
        };
        return Some(Divergence { loss, value, hint });
    }
    let (node, s) = units().find(|(_, s)| !s.diversity.is_finite())?;
    let module = match node {
        NodeId::Column { module, .. } => module,
        NodeId::Head => unreachable!("units are columns"),
    };
    Some(Divergence {
        loss: format!("the diversity term of module {module}"),
        value: s.diversity,
        hint: format!(
            "softmax(z / T) overflows with --temperature {}: try a larger --temperature (the paper \
             uses 3)",
            num(config.loss.temperature)
        ),
    })
}

/// `x` as a flag would take it: plain decimals for everyday magnitudes, else scientific (`1e-300`).
fn num(x: f64) -> String {
    if x == 0.0 || (1e-4..1e6).contains(&x.abs()) {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
}
