//! Datasets: readers for the on-disk formats, preprocessing, and a multi-threaded batch loader.
//!
//! Images are kept in memory as `u8`, `C x H x W` per image, and are converted to normalised `f32`
//! tensors batch by batch in background threads (see [`Loader`]). [`load`] reads a train and a test
//! split as described by a [`DataSpec`]. The files each [`DatasetKind`] reads, and its
//! normalisation and augmentation, are described on [`DatasetKind`].
//!
//! # Map
//!
//! * `kind.rs`: [`DatasetKind`], the closed list of datasets (config name, classes, default
//!   directory, install hint) and the description of every on-disk format.
//! * `spec.rs`: [`DataSpec`] and [`SyntheticSpec`], what a run asks for.
//! * `splits.rs`: [`load`], which dispatches on the kind to its reader and picks its transforms,
//!   returning [`Splits`].
//! * `dataset.rs`: [`Dataset`], one split in memory, and the seeded training subset.
//! * `error.rs`: [`DataError`] and the helpers readers share so that every error names its file.
//! * Readers, one per format: `idx.rs` (MNIST, Fashion-MNIST), `cifar.rs` (CIFAR-10/100), `npy.rs`
//!   (`.npy`/`.npz` and ImageNet32), `synthetic.rs` (generated data).
//! * `transform.rs`: augmentation and normalisation of one image ([`Transform`]).
//! * `loader.rs`: [`Loader`], batches of one epoch built by background threads.
//! * `rng.rs`: the seeded random streams the shuffle, the augmentation and the synthetic data use.
//!
//! # Adding a dataset
//!
//! 1. A variant of [`DatasetKind`] in `kind.rs`, with an arm in each of its `match`es (the
//!    compiler lists them) and an entry under "Formats read" in its doc.
//! 2. A reader `data/<format>.rs` returning the train and test [`Dataset`]s, built with the
//!    helpers of `error.rs`; re-export its public functions here.
//! 3. An arm in [`load`] (`splits.rs`) choosing its transforms, and its image shape in
//!    [`DataSpec::shape`] (`spec.rs`).
//! 4. A section of `crates/groupwise/tests/data_readers.rs` that writes a tiny fixture and checks
//!    a correct read and that truncated, malformed and missing files give errors naming the file.

mod cifar;
mod dataset;
mod error;
mod idx;
mod kind;
mod loader;
mod npy;
pub mod rng;
mod spec;
mod splits;
mod synthetic;
mod transform;

pub use cifar::{load_cifar10, load_cifar100};
pub use dataset::Dataset;
pub use error::DataError;
pub(crate) use error::{read_file, stored_label};
pub use idx::{load_mnist, read_idx_images, read_idx_labels};
pub use kind::DatasetKind;
pub use loader::{Batch, Loader, LoaderConfig};
pub use npy::{load_imagenet32, read_npz_array, NpyArray, NpyData};
pub use spec::{DataSpec, SyntheticSpec};
pub use splits::{load, Splits};
pub use synthetic::synthetic;
pub use transform::{augment_into, Augment, Crop, Padding, Transform};
