//! [`load`]: the entry point that reads a train and a test split for a [`DataSpec`], dispatching on
//! the kind to its reader and choosing each kind's normalisation and augmentation ([`Splits`]).

use super::{
    load_cifar10, load_cifar100, load_imagenet32, load_mnist, synthetic, Augment, DataError,
    DataSpec, Dataset, DatasetKind, Padding, Transform,
};

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

/// Normalisation used for MNIST-like and synthetic data: mean 0.5, std 0.5 on every channel.
fn half_transform() -> Transform {
    Transform::normalize_only(vec![0.5], vec![0.5])
}

/// Reads the train and test splits described by `spec`.
///
/// Errors name the file or directory at fault; a missing Fashion-MNIST directory also says how to
/// install Debian's package. A split without images (after the training subset) is an error.
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
    // Training or evaluating on nothing would "succeed" with meaningless numbers.
    for (split, d) in [("training", &train), ("test", &test)] {
        if d.is_empty() {
            let origin = match spec.kind {
                DatasetKind::Synthetic => "--synthetic".to_string(),
                _ => spec.dir()?.display().to_string(),
            };
            return Err(DataError::Empty { origin, split });
        }
    }
    Ok(Splits {
        train,
        test,
        train_transform,
        test_transform,
    })
}
