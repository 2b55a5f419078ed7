//! [`Dataset`]: one split held in memory as `u8` images and `u16` labels, with its checks and the
//! seeded training subset.

use std::fmt;

use super::rng::Rng;
use super::DataError;

/// An in-memory image classification dataset: `u8` images in `C x H x W` layout, one after the
/// other, with one label per image.
///
/// `Debug` prints the size and shape only, not the pixels.
#[derive(Clone, PartialEq, Eq)]
pub struct Dataset {
    images: Vec<u8>,
    labels: Vec<u16>,
    channels: usize,
    height: usize,
    width: usize,
    classes: usize,
}

impl Dataset {
    /// Builds a dataset, checking that `images` holds `labels.len()` images of the given shape and
    /// that every label is below `classes`.
    pub fn new(
        images: Vec<u8>,
        labels: Vec<u16>,
        shape: (usize, usize, usize),
        classes: usize,
    ) -> Result<Self, DataError> {
        let (channels, height, width) = shape;
        let size = channels * height * width;
        if size == 0 {
            return Err(DataError::Invalid(format!(
                "image shape {channels}x{height}x{width} is empty"
            )));
        }
        if images.len() != labels.len() * size {
            return Err(DataError::Invalid(format!(
                "{} image bytes do not hold {} images of {channels}x{height}x{width}",
                images.len(),
                labels.len()
            )));
        }
        if let Some((i, &l)) = labels
            .iter()
            .enumerate()
            .find(|(_, &l)| usize::from(l) >= classes)
        {
            return Err(DataError::Invalid(format!(
                "label {l} of sample {i} is not below the class count {classes}"
            )));
        }
        Ok(Dataset {
            images,
            labels,
            channels,
            height,
            width,
            classes,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// `(channels, height, width)` of every image.
    pub fn shape(&self) -> (usize, usize, usize) {
        (self.channels, self.height, self.width)
    }

    /// Channels per image.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Image height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Image width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Number of classes (labels are in `0..classes`).
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Bytes per image, `channels * height * width`.
    pub fn image_size(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Image `i` as `C x H x W` bytes.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn image(&self, i: usize) -> &[u8] {
        let s = self.image_size();
        &self.images[i * s..(i + 1) * s]
    }

    /// Label of image `i`.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn label(&self, i: usize) -> u16 {
        self.labels[i]
    }

    /// All images, concatenated.
    pub fn images(&self) -> &[u8] {
        &self.images
    }

    /// All labels.
    pub fn labels(&self) -> &[u16] {
        &self.labels
    }

    /// A new dataset made of the images at `indices`, in that order.
    ///
    /// # Panics
    /// If an index is out of range.
    pub fn select(&self, indices: &[usize]) -> Dataset {
        let s = self.image_size();
        let mut images = Vec::with_capacity(indices.len() * s);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            images.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        Dataset {
            images,
            labels,
            channels: self.channels,
            height: self.height,
            width: self.width,
            classes: self.classes,
        }
    }

    /// A seeded random subset of `n` images, kept in their original order.
    pub fn random_subset(&self, n: usize, seed: u64) -> Result<Dataset, DataError> {
        if n == 0 || n > self.len() {
            return Err(DataError::Invalid(format!(
                "--train-subset {n} must be between 1 and {} (the training set's images)",
                self.len()
            )));
        }
        let mut idx: Vec<usize> = (0..self.len()).collect();
        Rng::from_parts(&[0x5AB5E7, seed]).shuffle(&mut idx);
        idx.truncate(n);
        idx.sort_unstable();
        Ok(self.select(&idx))
    }

    /// Appends the images and labels of `other`, which must have the same shape and classes.
    pub(crate) fn append(&mut self, other: Dataset) {
        debug_assert_eq!(self.shape(), other.shape());
        self.images.extend_from_slice(&other.images);
        self.labels.extend_from_slice(&other.labels);
    }
}

impl fmt::Debug for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dataset")
            .field("len", &self.len())
            .field("channels", &self.channels)
            .field("height", &self.height)
            .field("width", &self.width)
            .field("classes", &self.classes)
            .finish_non_exhaustive()
    }
}
