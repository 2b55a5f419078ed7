//! [`DatasetKind`]: which dataset to read, with its configuration name, class count, default
//! directory and install hint, and (in its doc) the on-disk format of each kind.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::DataError;

/// Which dataset to read.
///
/// # Formats read
///
/// * **Fashion-MNIST / MNIST** ([`DatasetKind::FashionMnist`], [`DatasetKind::Mnist`]): a
///   directory with `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`
///   and `t10k-labels-idx1-ubyte`, each either plain or gzipped with a `.gz` suffix (the plain file
///   wins when both exist). IDX files are big-endian: images start with magic 2051, count, rows,
///   cols (`u32` each) followed by `count*rows*cols` pixel bytes; labels start with magic 2049 and
///   count followed by `count` label bytes. Images must be 28x28, the file length must match the
///   header exactly, the label count must equal the image count and labels must be below 10.
///   1 channel, normalised with mean 0.5 and std 0.5, no augmentation. Default directories:
///   `/usr/share/datasets/fashion-mnist` (Debian package `dataset-fashion-mnist`) and
///   `/usr/share/datasets/mnist`.
/// * **CIFAR-10** ([`DatasetKind::Cifar10`], binary version): `data_batch_1.bin` ..
///   `data_batch_5.bin` (train, concatenated in that order) and `test_batch.bin`; every record is 1
///   label byte then 3072 pixel bytes (1024 R, 1024 G, 1024 B, rows of 32).
/// * **CIFAR-100** ([`DatasetKind::Cifar100`], binary version): `train.bin` and `test.bin`; every
///   record is a coarse label byte, a fine label byte, then 3072 pixel bytes. The fine label
///   (100 classes) is used.
///
///   For both CIFAR variants the directory may also be the parent of the extracted tarball
///   (`cifar-10-batches-bin/` or `cifar-100-binary/`). File lengths must be non-zero multiples of
///   the record size and labels must be in range. Training augmentation: reflect padding of 4,
///   random 32x32 crop, random horizontal flip; normalisation mean (125.3, 123.0, 113.9)/255, std
///   (63.0, 62.1, 66.7)/255.
/// * **ImageNet 32x32** ([`DatasetKind::ImageNet32`], the downsampled ImageNet `npz` release):
///   `train_data_batch_1.npz` .. `train_data_batch_10.npz` and `val_data.npz`. Each `npz` is a zip
///   archive (members stored or deflated) of `.npy` arrays; the members `data` (`|u1`, shape
///   `[N, 3072]` or any shape `[N, ...]` with 3072 values per row, C order, pixels as 1024 R,
///   1024 G, 1024 B) and `labels` (N integers with dtype `<i8`, `<i4`, `<i2`, `|u1`, or another
///   integer type of 1, 2, 4 or 8 bytes in either byte order, values 1..=1000, shifted to
///   0..=999) are read; other members (such as `mean`) are ignored. The `.npy` header (magic
///   `\x93NUMPY`, version 1.0, 2.0 or 3.0, a Python dict literal with `descr`, `fortran_order`
///   which must be `False`, and `shape`) is parsed by `data/npy.rs`.
///   Training augmentation: zero padding of 4, random 32x32 crop, random horizontal flip;
///   normalisation mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225).
/// * **Synthetic** ([`DatasetKind::Synthetic`]): deterministic, learnable random data of any shape
///   (see [`SyntheticSpec`](super::SyntheticSpec)); each class has a fixed random prototype image
///   and every sample is its class prototype plus uniform noise, clipped to `u8`. Normalised with
///   mean 0.5 and std 0.5, no augmentation.
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
    /// Generated data of any shape (see [`SyntheticSpec`](super::SyntheticSpec)).
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
    /// Checks that `dir` exists and is a directory, else a [`DataError::NotFound`] with this kind's
    /// hint.
    pub(crate) fn require_dir(self, dir: &Path) -> Result<(), DataError> {
        if dir.is_dir() {
            Ok(())
        } else {
            Err(self.not_found(dir.to_path_buf(), None))
        }
    }

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
