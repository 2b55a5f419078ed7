//! Multi-threaded, deterministic batch loader.
//!
//! One [`Loader`] covers one epoch. Background threads turn `u8` images into normalised `f32`
//! tensors (with augmentation if asked) ahead of the consumer. Batch `i` is built by worker
//! `i % workers`, which sends it on its own bounded channel; the consumer reads the channels
//! round-robin, so batches arrive in order. All randomness is a function of (seed, epoch) for the
//! shuffle and (seed, epoch, position in the epoch) for the augmentation of each image, so the
//! batches are identical whatever the number of workers.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use tch::Tensor;

use super::rng::Rng;
use super::transform::{augment_into, normalize_with_lut, Augment};
use super::{DataError, Dataset, Transform};

const TAG_SHUFFLE: u64 = 0x5348_5546;
const TAG_AUGMENT: u64 = 0x4155_474D;

/// Settings of one epoch of a [`Loader`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoaderConfig {
    /// Images per batch (the last batch may be smaller unless `drop_last`).
    pub batch_size: usize,
    /// Visit the images in a random order that depends only on (`seed`, `epoch`).
    pub shuffle: bool,
    /// Apply the transform's augmentation (no effect when it has none).
    pub augment: bool,
    /// Drop the last batch when it is smaller than `batch_size`.
    pub drop_last: bool,
    /// Seed of the shuffle and augmentation randomness.
    pub seed: u64,
    /// Epoch number, mixed into the randomness so every epoch differs.
    pub epoch: u64,
    /// Background threads building batches; 0 builds them on the calling thread.
    pub workers: usize,
    /// Batches each worker may have ready ahead of the consumer (channel depth; 0 means the worker
    /// waits for the consumer before starting its next batch).
    pub prefetch: usize,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            batch_size: 128,
            shuffle: false,
            augment: false,
            drop_last: false,
            seed: 0,
            epoch: 0,
            workers: 2,
            prefetch: 2,
        }
    }
}

/// One batch of preprocessed images.
#[derive(Debug)]
pub struct Batch {
    /// `[B, C, H, W]` `f32` images, normalised (and augmented if enabled), on the CPU.
    pub images: Tensor,
    /// `[B]` `i64` class labels.
    pub labels: Tensor,
    /// Position of this batch in the epoch (0, 1, 2, ...).
    pub index: usize,
}

impl Batch {
    /// Number of images in the batch.
    pub fn len(&self) -> usize {
        self.labels.size().first().copied().unwrap_or(0) as usize
    }

    /// True for a batch without images (never produced by [`Loader`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What every worker needs to build any batch of the epoch.
struct Shared {
    dataset: Arc<Dataset>,
    /// Dataset index of every position in the epoch.
    order: Vec<usize>,
    /// Per-channel normalisation tables.
    lut: Vec<[f32; 256]>,
    transform: Transform,
    augment: bool,
    batch_size: usize,
    seed: u64,
    epoch: u64,
}

impl Shared {
    fn build(&self, index: usize) -> Batch {
        let start = index * self.batch_size;
        let end = (start + self.batch_size).min(self.order.len());
        let n = end - start;
        let shape = self.dataset.shape();
        let (c, h, w) = shape;
        let size = self.dataset.image_size();
        let mut pixels = vec![0f32; n * size];
        let mut labels = Vec::with_capacity(n);
        let mut scratch = vec![0u8; size];
        for (k, pos) in (start..end).enumerate() {
            let i = self.order[pos];
            let src = self.dataset.image(i);
            let out = &mut pixels[k * size..(k + 1) * size];
            let crop = match (self.augment, self.transform.augment) {
                (true, Augment::PadCropFlip { pad, padding }) => {
                    let mut rng =
                        Rng::from_parts(&[TAG_AUGMENT, self.seed, self.epoch, pos as u64]);
                    self.transform
                        .sample_crop(&mut rng)
                        .map(|crop| (pad, padding, crop))
                }
                _ => None,
            };
            match crop {
                Some((pad, padding, crop)) => {
                    augment_into(src, shape, pad, padding, crop, &mut scratch);
                    normalize_with_lut(&self.lut, &scratch, out);
                }
                None => normalize_with_lut(&self.lut, src, out),
            }
            labels.push(i64::from(self.dataset.label(i)));
        }
        Batch {
            images: Tensor::from_slice(&pixels).view([n as i64, c as i64, h as i64, w as i64]),
            labels: Tensor::from_slice(&labels),
            index,
        }
    }
}

/// An iterator over the batches of one epoch, built ahead of time by background threads.
///
/// Dropping it early is fine: the workers notice the closed channels and exit, and `drop` joins
/// them. If a worker panics, the panic is re-raised in the consumer when it reaches that
/// worker's next batch.
pub struct Loader {
    shared: Arc<Shared>,
    steps: usize,
    next: usize,
    receivers: Vec<Receiver<Batch>>,
    handles: Vec<Option<JoinHandle<()>>>,
}

impl Loader {
    /// Starts loading one epoch of `dataset` with `transform`.
    ///
    /// Fails if `batch_size` is 0, if the transform's mean/std do not have 1 or `channels`
    /// entries (or a std is not positive), or if a thread cannot be spawned.
    pub fn new(
        dataset: Arc<Dataset>,
        transform: Transform,
        config: &LoaderConfig,
    ) -> Result<Loader, DataError> {
        if config.batch_size == 0 {
            return Err(DataError::Invalid("batch_size must be at least 1".into()));
        }
        let channels = dataset.channels();
        for (name, v) in [("mean", &transform.mean), ("std", &transform.std)] {
            if v.len() != 1 && v.len() != channels {
                return Err(DataError::Invalid(format!(
                    "normalisation {name} has {} values for {channels} channels",
                    v.len()
                )));
            }
        }
        if transform.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(DataError::Invalid(format!(
                "normalisation std {:?} must be positive",
                transform.std
            )));
        }
        let n = dataset.len();
        let steps = Loader::steps_for(n, config.batch_size, config.drop_last);
        let order = Loader::epoch_order(n, config.shuffle, config.seed, config.epoch);
        let shared = Arc::new(Shared {
            lut: transform.lut(channels),
            dataset,
            order,
            transform,
            augment: config.augment,
            batch_size: config.batch_size,
            seed: config.seed,
            epoch: config.epoch,
        });
        let workers = config.workers.min(steps);
        let mut receivers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = sync_channel(config.prefetch);
            let s = Arc::clone(&shared);
            let handle = std::thread::Builder::new()
                .name(format!("data-loader-{w}"))
                .spawn(move || {
                    for index in (w..steps).step_by(workers) {
                        if tx.send(s.build(index)).is_err() {
                            return; // The loader was dropped.
                        }
                    }
                })
                .map_err(|e| DataError::Invalid(format!("cannot start a loader thread: {e}")))?;
            receivers.push(rx);
            handles.push(Some(handle));
        }
        Ok(Loader {
            shared,
            steps,
            next: 0,
            receivers,
            handles,
        })
    }

    /// Number of batches of an epoch over `n` images: `ceil(n / batch_size)`, or
    /// `floor(n / batch_size)` with `drop_last` (0 when `batch_size` is 0).
    pub fn steps_for(n: usize, batch_size: usize, drop_last: bool) -> usize {
        if batch_size == 0 {
            0
        } else if drop_last {
            n / batch_size
        } else {
            n.div_ceil(batch_size)
        }
    }

    /// The dataset index visited at each position of an epoch: `0..n` in order, or a permutation
    /// that depends only on (`seed`, `epoch`) when shuffling.
    pub fn epoch_order(n: usize, shuffle: bool, seed: u64, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        if shuffle {
            Rng::from_parts(&[TAG_SHUFFLE, seed, epoch]).shuffle(&mut order);
        }
        order
    }

    /// Number of batches this epoch yields.
    pub fn steps_per_epoch(&self) -> usize {
        self.steps
    }

    /// The dataset being read.
    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.shared.dataset
    }

    /// Receives batch `self.next` from its worker, re-raising the worker's panic if it died.
    fn receive(&mut self) -> Batch {
        let w = self.next % self.receivers.len();
        match self.receivers[w].recv() {
            Ok(batch) => batch,
            Err(_) => {
                if let Some(handle) = self.handles[w].take() {
                    if let Err(payload) = handle.join() {
                        std::panic::resume_unwind(payload);
                    }
                }
                panic!(
                    "data loader worker {w} stopped before sending batch {}",
                    self.next
                );
            }
        }
    }
}

impl Iterator for Loader {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.next >= self.steps {
            return None;
        }
        let batch = if self.receivers.is_empty() {
            self.shared.build(self.next)
        } else {
            self.receive()
        };
        self.next += 1;
        Some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.steps - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Loader {}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing the receivers makes every blocked or future `send` fail, so workers exit.
        self.receivers.clear();
        for handle in self.handles.iter_mut().filter_map(Option::take) {
            let _ = handle.join();
        }
    }
}
