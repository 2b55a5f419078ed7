//! Deterministic, learnable synthetic data of any shape.

use super::rng::Rng;
use super::{DataError, Dataset, SyntheticSpec};

/// Half-width of the uniform per-pixel noise added to the class prototype, in pixel units.
const NOISE: i32 = 48;
const TAG_PROTOTYPE: u64 = 0x5052_4F54;
const TAG_SAMPLE: u64 = 0x5341_4D50;

/// Generates the train and test splits described by `spec` from `seed`.
///
/// Each class has a fixed random prototype image (uniform pixels); sample `i` of a split has label
/// `i % classes` and is its prototype plus independent uniform noise in `[-48, 48]` per pixel,
/// clipped to `0..=255`. The same `(spec, seed)` always gives the same data, and train and test
/// share the prototypes, so the task is learnable.
pub fn synthetic(spec: &SyntheticSpec, seed: u64) -> Result<(Dataset, Dataset), DataError> {
    let SyntheticSpec {
        channels,
        size,
        classes,
        train,
        test,
    } = *spec;
    if channels == 0 || size == 0 || classes == 0 {
        return Err(DataError::Invalid(format!(
            "synthetic data needs non-zero channels, size and classes (got {channels}, {size}, \
             {classes})"
        )));
    }
    if classes > usize::from(u16::MAX) + 1 {
        return Err(DataError::Invalid(format!(
            "synthetic data supports at most 65536 classes (got {classes})"
        )));
    }
    let image = channels
        .checked_mul(size)
        .and_then(|v| v.checked_mul(size))
        .filter(|&v| v.checked_mul(train.max(test)).is_some())
        .ok_or_else(|| DataError::Invalid("synthetic data size overflows".into()))?;
    let prototypes: Vec<Vec<u8>> = (0..classes)
        .map(|c| {
            let mut rng = Rng::from_parts(&[TAG_PROTOTYPE, seed, c as u64]);
            (0..image).map(|_| (rng.next_u64() >> 56) as u8).collect()
        })
        .collect();
    let make = |split: u64, n: usize| {
        let mut images = Vec::with_capacity(n * image);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let label = i % classes;
            let mut rng = Rng::from_parts(&[TAG_SAMPLE, seed, split, i as u64]);
            images.extend(prototypes[label].iter().map(|&p| {
                let noise = rng.below(2 * NOISE as u64 + 1) as i32 - NOISE;
                (i32::from(p) + noise).clamp(0, 255) as u8
            }));
            labels.push(label as u16);
        }
        Dataset::new(images, labels, (channels, size, size), classes)
    };
    Ok((make(0, train)?, make(1, test)?))
}
