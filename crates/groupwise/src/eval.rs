//! Evaluation (METHOD.md section 6): head only, layerwise ensemble, and every auxiliary classifier.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::data::{DataError, Dataset, Loader, LoaderConfig, Transform};
use crate::local::Network;

/// Test accuracies (fractions in [0, 1]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    /// The head's prediction on the full backbone (the default metric).
    pub head: f64,
    /// Layerwise ensemble: `argmax sum_i w_i * mean_g softmax(z[i][g])`, `w_i = 2^i / sum_j 2^j`, the
    /// boundaries in order and the head last.
    pub ensemble: f64,
    /// `units[k][g]`: accuracy of `aux[k][g]` alone.
    pub units: Vec<Vec<f64>>,
    /// `boundaries[k]`: accuracy of `mean_g softmax(z[k][g])` (all groups of boundary k together).
    pub boundaries: Vec<f64>,
    /// Images evaluated.
    pub images: usize,
}

/// Evaluates `net` on every image of `dataset` (in order, no augmentation).
pub fn evaluate(
    net: &Network,
    dataset: Arc<Dataset>,
    transform: Transform,
    batch_size: usize,
    workers: usize,
    device: Device,
) -> Result<EvalResult, DataError> {
    let config = LoaderConfig {
        batch_size,
        workers,
        ..Default::default()
    };
    let loader = Loader::new(dataset, transform, &config)?;
    let k_count = net.units.len();
    let mut units: Vec<Vec<i64>> = net.units.iter().map(|u| vec![0; u.len()]).collect();
    let mut boundaries = vec![0i64; k_count];
    let (mut head, mut ensemble, mut images) = (0i64, 0i64, 0usize);
    let weight_sum: f64 = (0..=k_count).map(|i| 2f64.powi(i as i32)).sum();
    for batch in loader {
        let x = batch.images.to_device(device);
        let y = batch.labels.to_device(device);
        let out = net.forward_eval(&x);
        let hits = |z: &Tensor| {
            z.argmax(1, false)
                .eq_tensor(&y)
                .sum(Kind::Int64)
                .int64_value(&[])
        };
        let head_p = out.head.softmax(1, Kind::Float);
        let mut mix = &head_p * (2f64.powi(k_count as i32) / weight_sum);
        for (k, logits) in out.aux.iter().enumerate() {
            let mean = logits
                .iter()
                .map(|z| z.softmax(1, Kind::Float))
                .reduce(|a, b| a + b)
                .expect("at least one group")
                / logits.len() as f64;
            for (g, z) in logits.iter().enumerate() {
                units[k][g] += hits(z);
            }
            boundaries[k] += hits(&mean);
            mix += mean * (2f64.powi(k as i32) / weight_sum);
        }
        head += hits(&out.head);
        ensemble += hits(&mix);
        images += batch.labels.size()[0] as usize;
    }
    let frac = |c: i64| c as f64 / images.max(1) as f64;
    Ok(EvalResult {
        head: frac(head),
        ensemble: frac(ensemble),
        units: units
            .iter()
            .map(|u| u.iter().map(|&c| frac(c)).collect())
            .collect(),
        boundaries: boundaries.iter().map(|&c| frac(c)).collect(),
        images,
    })
}
