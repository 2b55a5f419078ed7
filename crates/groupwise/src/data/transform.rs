//! Per-image preprocessing: augmentation on `u8` pixels, then per-channel normalisation to `f32`.
//!
//! Augmentation (pad, random crop back to the original size, random horizontal flip) is done on
//! the raw `u8` image, as torchvision's `RandomCrop(padding=4)` + `RandomHorizontalFlip` do on PIL
//! images, so zero padding means pixel value 0 (before normalisation). Normalisation then maps a
//! pixel `p` of channel `c` to `(p / 255 - mean[c]) / std[c]`.

use super::rng::Rng;

/// How the border is filled before a random crop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// Mirror without repeating the edge pixel (`padding_mode="reflect"`): index -1 reads index 1.
    Reflect,
    /// Pixel value 0.
    Zero,
}

/// The augmentation applied to training images.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Augment {
    /// Images are used as stored.
    None,
    /// Pad every side by `pad` pixels, take a random crop of the original size, flip horizontally
    /// with probability 1/2.
    PadCropFlip {
        /// Padding on each side, in pixels.
        pad: usize,
        /// How the padded border is filled.
        padding: Padding,
    },
}

/// The choice of one random crop: offsets into the padded image and whether to mirror.
///
/// With padding `pad`, valid offsets are `0..=2*pad`; `dy = dx = pad` with `flip = false` is the
/// identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crop {
    /// Row offset of the crop inside the padded image.
    pub dy: usize,
    /// Column offset of the crop inside the padded image.
    pub dx: usize,
    /// Mirror the crop left-right.
    pub flip: bool,
}

/// The preprocessing of one split: normalisation constants and the augmentation to use when
/// augmentation is enabled in the loader.
#[derive(Clone, Debug, PartialEq)]
pub struct Transform {
    /// Per-channel mean, on the `[0, 1]` pixel scale (one entry per channel, or one for all).
    pub mean: Vec<f32>,
    /// Per-channel standard deviation, on the `[0, 1]` pixel scale (same length as `mean`).
    pub std: Vec<f32>,
    /// Augmentation for training; [`Augment::None`] for evaluation splits.
    pub augment: Augment,
}

impl Transform {
    /// A transform that only normalises.
    pub fn normalize_only(mean: Vec<f32>, std: Vec<f32>) -> Self {
        Transform {
            mean,
            std,
            augment: Augment::None,
        }
    }

    /// The same transform without augmentation (for evaluating on a training split).
    pub fn without_augment(&self) -> Self {
        Transform {
            augment: Augment::None,
            ..self.clone()
        }
    }

    /// The normalised value of pixel `p` in channel `c`.
    ///
    /// If `mean`/`std` have a single entry it applies to every channel.
    ///
    /// # Panics
    /// If `mean` or `std` is empty ([`crate::data::Loader::new`] rejects such transforms).
    pub fn normalize_value(&self, c: usize, p: u8) -> f32 {
        let m = self.mean[c.min(self.mean.len() - 1)];
        let s = self.std[c.min(self.std.len() - 1)];
        (f32::from(p) / 255.0 - m) / s
    }

    /// A 256-entry lookup table per channel, so normalising is one load per pixel.
    pub(crate) fn lut(&self, channels: usize) -> Vec<[f32; 256]> {
        (0..channels)
            .map(|c| {
                let mut t = [0f32; 256];
                for (p, v) in t.iter_mut().enumerate() {
                    *v = self.normalize_value(c, p as u8);
                }
                t
            })
            .collect()
    }

    /// Normalises one CHW `u8` image into `dst` (same length).
    ///
    /// # Panics
    /// If `src.len() != dst.len()`, the length is not a multiple of `channels`, or `mean`/`std`
    /// is empty.
    pub fn normalize_into(&self, src: &[u8], channels: usize, dst: &mut [f32]) {
        normalize_with_lut(&self.lut(channels), src, dst);
    }

    /// Draws the random crop for one image from `rng`; `None` when there is no augmentation.
    pub fn sample_crop(&self, rng: &mut Rng) -> Option<Crop> {
        match self.augment {
            Augment::None => None,
            Augment::PadCropFlip { pad, .. } => {
                let span = 2 * pad as u64 + 1;
                let dy = rng.below(span) as usize;
                let dx = rng.below(span) as usize;
                let flip = rng.next_bool();
                Some(Crop { dy, dx, flip })
            }
        }
    }
}

/// Normalises with a precomputed per-channel table.
pub(crate) fn normalize_with_lut(lut: &[[f32; 256]], src: &[u8], dst: &mut [f32]) {
    assert_eq!(
        src.len(),
        dst.len(),
        "normalize: source and destination lengths differ"
    );
    let channels = lut.len();
    assert!(
        channels > 0 && src.len().is_multiple_of(channels),
        "normalize: image length is not a multiple of the channel count"
    );
    let plane = src.len() / channels;
    for (c, table) in lut.iter().enumerate() {
        let s = &src[c * plane..(c + 1) * plane];
        let d = &mut dst[c * plane..(c + 1) * plane];
        for (o, &p) in d.iter_mut().zip(s) {
            *o = table[p as usize];
        }
    }
}

/// Maps a coordinate of the padded image back into `0..n`, or `None` for zero padding outside.
fn source_index(i: isize, n: usize, padding: Padding) -> Option<usize> {
    let n = n as isize;
    if (0..n).contains(&i) {
        return Some(i as usize);
    }
    match padding {
        Padding::Zero => None,
        Padding::Reflect => {
            if n == 1 {
                return Some(0);
            }
            // Reflection without edge repetition has period 2(n-1).
            let period = 2 * (n - 1);
            let mut j = i.rem_euclid(period);
            if j >= n {
                j = period - j;
            }
            Some(j as usize)
        }
    }
}

/// Writes the augmented version of one CHW `u8` image into `dst`.
///
/// The image (`shape = (channels, height, width)`) is conceptually padded by `pad` pixels on every
/// side using `padding`, the `height x width` window at offsets (`crop.dy`, `crop.dx`) of the
/// padded image is taken, and mirrored left-right if `crop.flip`. So
/// `dst[c][y][x] = padded[c][y + dy][x' + dx]` with `x' = width - 1 - x` when flipping, else `x`,
/// and `padded[c][i][j] = src[c][i - pad][j - pad]` inside the image.
///
/// Public so callers and tests can check the padding arithmetic with explicit offsets.
///
/// # Panics
/// If `src` or `dst` is not `channels * height * width` long.
pub fn augment_into(
    src: &[u8],
    shape: (usize, usize, usize),
    pad: usize,
    padding: Padding,
    crop: Crop,
    dst: &mut [u8],
) {
    let (channels, height, width) = shape;
    let size = channels * height * width;
    assert_eq!(
        src.len(),
        size,
        "augment: source is not channels*height*width long"
    );
    assert_eq!(
        dst.len(),
        size,
        "augment: destination is not channels*height*width long"
    );
    let plane = height * width;
    // Column sources are the same for every row and channel.
    let cols: Vec<Option<usize>> = (0..width)
        .map(|x| {
            let xx = if crop.flip { width - 1 - x } else { x };
            source_index(
                xx as isize + crop.dx as isize - pad as isize,
                width,
                padding,
            )
        })
        .collect();
    for y in 0..height {
        let sy = source_index(
            y as isize + crop.dy as isize - pad as isize,
            height,
            padding,
        );
        for c in 0..channels {
            let out = &mut dst[c * plane + y * width..c * plane + (y + 1) * width];
            match sy {
                None => out.fill(0),
                Some(sy) => {
                    let row = &src[c * plane + sy * width..c * plane + (sy + 1) * width];
                    for (o, sx) in out.iter_mut().zip(&cols) {
                        *o = sx.map_or(0, |sx| row[sx]);
                    }
                }
            }
        }
    }
}
