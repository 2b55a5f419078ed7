//! [`DataSpec`]: what data to load (kind, directory, training subset, seed), and the shape of the
//! synthetic data ([`SyntheticSpec`]).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{DataError, DatasetKind};

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
            (None, None) => Err(DataError::NoPath {
                kind: self.kind.name(),
            }),
        }
    }
}
