//! Datasets: readers for the on-disk formats, preprocessing, and a multi-threaded batch loader.
//!
//! Images are kept in memory as `u8`, `C x H x W` per image, and are converted to normalised `f32`
//! tensors batch by batch in background threads (see [`Loader`]). [`load`] reads a train and a test
//! split as described by a [`DataSpec`].
//!
//! # Formats read
//!
//! * **Fashion-MNIST / MNIST** ([`DatasetKind::FashionMnist`], [`DatasetKind::Mnist`]): a
//!   directory with `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`
//!   and `t10k-labels-idx1-ubyte`, each either plain or gzipped with a `.gz` suffix (the plain file
//!   wins when both exist). IDX files are big-endian: images start with magic 2051, count, rows,
//!   cols (`u32` each) followed by `count*rows*cols` pixel bytes; labels start with magic 2049 and
//!   count followed by `count` label bytes. Images must be 28x28, the file length must match the
//!   header exactly, the label count must equal the image count and labels must be below 10.
//!   1 channel, normalised with mean 0.5 and std 0.5, no augmentation. Default directories:
//!   `/usr/share/datasets/fashion-mnist` (Debian package `dataset-fashion-mnist`) and
//!   `/usr/share/datasets/mnist`.
//! * **CIFAR-10** ([`DatasetKind::Cifar10`], binary version): `data_batch_1.bin` ..
//!   `data_batch_5.bin` (train, concatenated in that order) and `test_batch.bin`; every record is 1
//!   label byte then 3072 pixel bytes (1024 R, 1024 G, 1024 B, rows of 32).
//! * **CIFAR-100** ([`DatasetKind::Cifar100`], binary version): `train.bin` and `test.bin`; every
//!   record is a coarse label byte, a fine label byte, then 3072 pixel bytes. The fine label
//!   (100 classes) is used.
//!
//!   For both CIFAR variants the directory may also be the parent of the extracted tarball
//!   (`cifar-10-batches-bin/` or `cifar-100-binary/`). File lengths must be non-zero multiples of
//!   the record size and labels must be in range. Training augmentation: reflect padding of 4,
//!   random 32x32 crop, random horizontal flip; normalisation mean (125.3, 123.0, 113.9)/255, std
//!   (63.0, 62.1, 66.7)/255.
//! * **ImageNet 32x32** ([`DatasetKind::ImageNet32`], the downsampled ImageNet `npz` release):
//!   `train_data_batch_1.npz` .. `train_data_batch_10.npz` and `val_data.npz`. Each `npz` is a zip
//!   archive (members stored or deflated) of `.npy` arrays; the members `data` (`|u1`, shape
//!   `[N, 3072]` or any shape `[N, ...]` with 3072 values per row, C order, pixels as 1024 R,
//!   1024 G, 1024 B) and `labels` (N integers with dtype `<i8`, `<i4`, `<i2`, `|u1`, and a few
//!   other little-endian integer types, values 1..=1000, shifted to 0..=999) are read; other
//!   members (such as `mean`) are ignored. The `.npy` header (magic `\x93NUMPY`, version 1.0, 2.0
//!   or 3.0, a Python dict literal with `descr`, `fortran_order` which must be `False`, and
//!   `shape`) is parsed here. Training augmentation: zero padding of 4, random 32x32 crop, random
//!   horizontal flip; normalisation mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225).
//! * **Synthetic** ([`DatasetKind::Synthetic`]): deterministic, learnable random data of any shape
//!   (see [`SyntheticSpec`]); each class has a fixed random prototype image and every sample is
//!   its class prototype plus uniform noise, clipped to `u8`. Normalised with mean 0.5 and std
//!   0.5, no augmentation.

mod cifar;
mod idx;
mod loader;
mod npy;
pub mod rng;
mod synthetic;
mod transform;

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use cifar::{load_cifar10, load_cifar100};
pub use idx::{load_mnist, read_idx_images, read_idx_labels};
pub use loader::{Batch, Loader, LoaderConfig};
pub use npy::{load_imagenet32, read_npz_array, NpyArray, NpyData};
pub use synthetic::synthetic;
pub use transform::{augment_into, Augment, Crop, Padding, Transform};

/// Everything that can go wrong while reading a dataset or setting up a loader.
///
/// Every variant about a file carries its path, so every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A dataset directory or file does not exist.
    #[error("{}: not found{hint}", path.display())]
    NotFound {
        /// The missing path.
        path: PathBuf,
        /// Extra guidance appended to the message (may be empty), e.g. how to install the data.
        hint: String,
    },
    /// Reading a file failed (including a corrupt or truncated gzip stream).
    #[error("{}: read error: {source}", path.display())]
    Io {
        /// The file being read.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file is shorter (or longer) than its header says.
    #[error("{}: truncated or malformed: expected {expected} bytes, found {actual}", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// The length implied by the header / record size.
        expected: u64,
        /// The actual length.
        actual: u64,
    },
    /// A file's contents do not follow the expected format (bad magic, dims, dtype...).
    #[error("{}: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A label is outside `0..classes`.
    #[error("{}: label {label} of sample {index} is out of range (expected {min}..={max})", path.display())]
    LabelOutOfRange {
        /// The file holding the label.
        path: PathBuf,
        /// Index of the sample within that file.
        index: usize,
        /// The label as stored.
        label: i64,
        /// Smallest valid stored label.
        min: i64,
        /// Largest valid stored label.
        max: i64,
    },
    /// The zip container of an `.npz` file could not be read.
    #[error("{}: zip error: {source}", path.display())]
    Zip {
        /// The archive.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: zip::result::ZipError,
    },
    /// The dataset kind has no default directory and none was given.
    #[error("dataset `{kind}` has no default location: set the data path")]
    NoPath {
        /// The dataset kind.
        kind: DatasetKind,
    },
    /// The specification or loader settings are invalid (no file involved).
    #[error("invalid data settings: {0}")]
    Invalid(String),
}

impl DataError {
    pub(crate) fn format(path: &Path, message: impl Into<String>) -> Self {
        DataError::Format {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            DataError::NotFound {
                path: path.to_path_buf(),
                hint: String::new(),
            }
        } else {
            DataError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

/// Reads a whole file, mapping errors to [`DataError`] naming the file.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    let mut f = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut buf = Vec::new();
    if let Ok(m) = f.metadata() {
        buf.reserve(m.len() as usize);
    }
    f.read_to_end(&mut buf)
        .map_err(|e| DataError::io(path, e))?;
    Ok(buf)
}

/// Which dataset to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DatasetKind {
    /// Fashion-MNIST (IDX files), 28x28 grey, 10 classes.
    #[serde(rename = "fashion-mnist")]
    FashionMnist,
    /// MNIST (IDX files), 28x28 grey, 10 classes.
    #[serde(rename = "mnist")]
    Mnist,
    /// CIFAR-10 binary version, 32x32 RGB, 10 classes.
    #[serde(rename = "cifar10")]
    Cifar10,
    /// CIFAR-100 binary version, 32x32 RGB, 100 (fine) classes.
    #[serde(rename = "cifar100")]
    Cifar100,
    /// Downsampled ImageNet 32x32 (`npz` files), 1000 classes.
    #[serde(rename = "imagenet32")]
    ImageNet32,
    /// Generated data of any shape (see [`SyntheticSpec`]).
    #[serde(rename = "synthetic")]
    Synthetic,
}

impl DatasetKind {
    /// All kinds, in declaration order.
    pub const ALL: [DatasetKind; 6] = [
        DatasetKind::FashionMnist,
        DatasetKind::Mnist,
        DatasetKind::Cifar10,
        DatasetKind::Cifar100,
        DatasetKind::ImageNet32,
        DatasetKind::Synthetic,
    ];

    /// The configuration name (`"fashion-mnist"`, `"cifar10"`, ...), as used by serde.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Mnist => "mnist",
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Cifar100 => "cifar100",
            DatasetKind::ImageNet32 => "imagenet32",
            DatasetKind::Synthetic => "synthetic",
        }
    }

    /// Where the data lives when no path is given: Debian's packaged locations for Fashion-MNIST
    /// and MNIST, `None` for the others (which then need an explicit path).
    pub fn default_dir(self) -> Option<&'static Path> {
        match self {
            DatasetKind::FashionMnist => Some(Path::new("/usr/share/datasets/fashion-mnist")),
            DatasetKind::Mnist => Some(Path::new("/usr/share/datasets/mnist")),
            _ => None,
        }
    }

    /// Number of classes of the real datasets (`None` for synthetic, where it is configurable).
    pub fn classes(self) -> Option<usize> {
        match self {
            DatasetKind::FashionMnist | DatasetKind::Mnist | DatasetKind::Cifar10 => Some(10),
            DatasetKind::Cifar100 => Some(100),
            DatasetKind::ImageNet32 => Some(1000),
            DatasetKind::Synthetic => None,
        }
    }

    /// How to get the data, for "not found" errors.
    pub(crate) fn install_hint(self) -> &'static str {
        match self {
            DatasetKind::FashionMnist => {
                "on Debian/Ubuntu install it with `apt-get install dataset-fashion-mnist`, \
                 or point the data path at a directory with the IDX files"
            }
            DatasetKind::Mnist => "point the data path at a directory with the MNIST IDX files",
            DatasetKind::Cifar10 => {
                "download and extract cifar-10-binary.tar.gz (the binary version) and point the \
                 data path at it"
            }
            DatasetKind::Cifar100 => {
                "download and extract cifar-100-binary.tar.gz (the binary version) and point the \
                 data path at it"
            }
            DatasetKind::ImageNet32 => {
                "download the Imagenet32 npz files (train_data_batch_1..10.npz, val_data.npz) \
                 and point the data path at their directory"
            }
            DatasetKind::Synthetic => "synthetic data needs no files",
        }
    }

    /// A "not found" error for `path`, with `detail` (if any) and the install hint.
    pub(crate) fn not_found(self, path: PathBuf, detail: Option<String>) -> DataError {
        let hint = match detail {
            Some(d) => format!(" ({d}; {})", self.install_hint()),
            None => format!(" ({})", self.install_hint()),
        };
        DataError::NotFound { path, hint }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DatasetKind {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DatasetKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = DatasetKind::ALL.iter().map(|k| k.name()).collect();
                DataError::Invalid(format!(
                    "unknown dataset `{s}` (expected one of: {})",
                    names.join(", ")
                ))
            })
    }
}

/// Shape and size of the synthetic dataset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyntheticSpec {
    /// Channels per image.
    pub channels: usize,
    /// Height and width of the (square) images.
    pub size: usize,
    /// Number of classes (at most 65536).
    pub classes: usize,
    /// Number of training samples.
    pub train: usize,
    /// Number of test samples.
    pub test: usize,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        SyntheticSpec {
            channels: 3,
            size: 32,
            classes: 10,
            train: 1000,
            test: 200,
        }
    }
}

/// What data to load: the dataset kind, where it is, and how much of the training split to use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSpec {
    /// Which dataset.
    pub kind: DatasetKind,
    /// Directory with the files; `None` uses [`DatasetKind::default_dir`].
    pub path: Option<PathBuf>,
    /// Shape of the data when `kind` is [`DatasetKind::Synthetic`] (ignored otherwise).
    pub synthetic: SyntheticSpec,
    /// Use only this many training samples (a seeded random subset, kept in file order).
    pub train_subset: Option<usize>,
    /// Seed for the synthetic data and the training subset.
    pub seed: u64,
}

impl Default for DataSpec {
    fn default() -> Self {
        DataSpec {
            kind: DatasetKind::FashionMnist,
            path: None,
            synthetic: SyntheticSpec::default(),
            train_subset: None,
            seed: 0,
        }
    }
}

impl DataSpec {
    /// `(channels, image size, classes)` of the data this spec reads, known without reading it.
    pub fn shape(&self) -> (usize, usize, usize) {
        let (channels, size) = match self.kind {
            DatasetKind::FashionMnist | DatasetKind::Mnist => (1, 28),
            DatasetKind::Cifar10 | DatasetKind::Cifar100 | DatasetKind::ImageNet32 => (3, 32),
            DatasetKind::Synthetic => {
                let s = &self.synthetic;
                return (s.channels, s.size, s.classes);
            }
        };
        let classes = self
            .kind
            .classes()
            .expect("every real dataset has a class count");
        (channels, size, classes)
    }

    /// The directory to read: the explicit path or the kind's default.
    pub fn dir(&self) -> Result<PathBuf, DataError> {
        match (&self.path, self.kind.default_dir()) {
            (Some(p), _) => Ok(p.clone()),
            (None, Some(d)) => Ok(d.to_path_buf()),
            (None, None) => Err(DataError::NoPath { kind: self.kind }),
        }
    }
}

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
        if n > self.len() {
            return Err(DataError::Invalid(format!(
                "train_subset {n} is larger than the training set ({} images)",
                self.len()
            )));
        }
        let mut idx: Vec<usize> = (0..self.len()).collect();
        rng::Rng::from_parts(&[0x5AB5E7, seed]).shuffle(&mut idx);
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

/// A train and a test split with their preprocessing.
#[derive(Clone, Debug)]
pub struct Splits {
    /// The training split (already reduced to `train_subset` if set).
    pub train: Dataset,
    /// The test (validation) split.
    pub test: Dataset,
    /// Preprocessing of the training split (augmentation applies when the loader enables it).
    pub train_transform: Transform,
    /// Preprocessing of the test split (normalisation only).
    pub test_transform: Transform,
}

/// Normalisation used for MNIST-like and synthetic data: mean 0.5, std 0.5 on every channel.
/// A label as stored in `path` (sample `index`) mapped to `0..=max-min`, or
/// [`DataError::LabelOutOfRange`] when it lies outside `min..=max`. Every reader checks its labels here.
pub(crate) fn stored_label(
    path: &Path,
    index: usize,
    label: i64,
    min: i64,
    max: i64,
) -> Result<u16, DataError> {
    if (min..=max).contains(&label) {
        Ok((label - min) as u16)
    } else {
        Err(DataError::LabelOutOfRange {
            path: path.to_path_buf(),
            index,
            label,
            min,
            max,
        })
    }
}

/// Train and test transforms of the 32x32 colour datasets: normalise with `mean`/`std`; for training
/// also pad 4 (`padding`), random crop and flip.
fn pad_crop_flip(mean: Vec<f32>, std: Vec<f32>, padding: Padding) -> (Transform, Transform) {
    let test = Transform::normalize_only(mean.clone(), std.clone());
    let train = Transform {
        mean,
        std,
        augment: Augment::PadCropFlip { pad: 4, padding },
    };
    (train, test)
}

fn half_transform() -> Transform {
    Transform::normalize_only(vec![0.5], vec![0.5])
}

/// Reads the train and test splits described by `spec`.
///
/// Errors name the file or directory at fault; a missing Fashion-MNIST directory also says how to
/// install Debian's package.
pub fn load(spec: &DataSpec) -> Result<Splits, DataError> {
    let (train, test, train_transform, test_transform) = match spec.kind {
        DatasetKind::Synthetic => {
            let (train, test) = synthetic(&spec.synthetic, spec.seed)?;
            (train, test, half_transform(), half_transform())
        }
        DatasetKind::FashionMnist | DatasetKind::Mnist => {
            let (train, test) = load_mnist(&spec.dir()?, spec.kind)?;
            (train, test, half_transform(), half_transform())
        }
        DatasetKind::Cifar10 | DatasetKind::Cifar100 => {
            let dir = spec.dir()?;
            let (train, test) = if spec.kind == DatasetKind::Cifar10 {
                load_cifar10(&dir)?
            } else {
                load_cifar100(&dir)?
            };
            let mean = [125.3f32, 123.0, 113.9].map(|v| v / 255.0).to_vec();
            let std = [63.0f32, 62.1, 66.7].map(|v| v / 255.0).to_vec();
            let (train_t, test_t) = pad_crop_flip(mean, std, Padding::Reflect);
            (train, test, train_t, test_t)
        }
        DatasetKind::ImageNet32 => {
            let (train, test) = load_imagenet32(&spec.dir()?)?;
            let mean = vec![0.485, 0.456, 0.406];
            let std = vec![0.229, 0.224, 0.225];
            let (train_t, test_t) = pad_crop_flip(mean, std, Padding::Zero);
            (train, test, train_t, test_t)
        }
    };
    let train = match spec.train_subset {
        Some(n) => train.random_subset(n, spec.seed)?,
        None => train,
    };
    Ok(Splits {
        train,
        test,
        train_transform,
        test_transform,
    })
}

/// Checks that `dir` exists and is a directory, else a [`DataError::NotFound`] with the kind's hint.
pub(crate) fn require_dir(dir: &Path, kind: DatasetKind) -> Result<(), DataError> {
    if dir.is_dir() {
        Ok(())
    } else {
        Err(kind.not_found(dir.to_path_buf(), None))
    }
}
