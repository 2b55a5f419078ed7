//! IDX (MNIST / Fashion-MNIST): plain, gzipped and mixed files, malformed headers and labels,
//! missing files, and the real Debian Fashion-MNIST files when installed.

use std::path::Path;
use std::sync::Arc;

use groupwise::data::{load, Augment, DataError, DataSpec, DatasetKind, Loader, LoaderConfig};

use super::{
    assert_mentions, gzip, idx_images, idx_labels, load_err, mnist_pixel, spec, write, write_mnist,
    TEST_LABELS,
};
use crate::common::scratch;

fn check_mnist(dir: &Path, kind: DatasetKind) {
    let s = load(&spec(kind, dir)).unwrap();
    assert_eq!(s.train.len(), 3);
    assert_eq!(s.test.len(), 2);
    assert_eq!(s.train.shape(), (1, 28, 28));
    assert_eq!(s.train.classes(), 10);
    assert_eq!(s.train.labels(), &[1, 0, 9]);
    assert_eq!(s.test.labels(), &[7, 3]);
    for i in 0..3 {
        let expected: Vec<u8> = (0..784).map(|p| mnist_pixel(i, p)).collect();
        assert_eq!(s.train.image(i), expected.as_slice());
    }
    let expected: Vec<u8> = (0..784).map(|p| mnist_pixel(1, p)).collect();
    assert_eq!(s.test.image(1), expected.as_slice());
    assert_eq!(s.train_transform.augment, Augment::None);
    assert_eq!(s.test_transform.augment, Augment::None);
    assert_eq!(s.train_transform.normalize_value(0, 255), 1.0);
    assert_eq!(s.train_transform.normalize_value(0, 0), -1.0);
}

#[test]
fn idx_plain_gz_and_mixed() {
    for (tag, gz) in [
        ("plain", [false; 4]),
        ("gz", [true; 4]),
        ("mixed", [true, false, false, true]),
    ] {
        let dir = scratch(&format!("idx-{tag}"));
        write_mnist(dir.path(), gz);
        check_mnist(dir.path(), DatasetKind::Mnist);
        check_mnist(dir.path(), DatasetKind::FashionMnist);
    }
}

#[test]
fn idx_truncated_plain_and_gz() {
    let dir = scratch("idx-trunc");
    write_mnist(dir.path(), [false; 4]);
    let full = idx_images(3, 28, 28);
    write(
        &dir.join("train-images-idx3-ubyte"),
        &full[..full.len() - 10],
    );
    let msg = load_err(DatasetKind::Mnist, dir.path());
    assert_mentions(&msg, "train-images-idx3-ubyte");
    assert!(msg.contains("truncated"), "{msg}");

    // Header cut short.
    write(&dir.join("train-images-idx3-ubyte"), &full[..10]);
    assert_mentions(
        &load_err(DatasetKind::Mnist, dir.path()),
        "train-images-idx3-ubyte",
    );

    // A cut gzip stream.
    let dir = scratch("idx-trunc-gz");
    write_mnist(dir.path(), [true; 4]);
    let gz = gzip(&idx_labels(&TEST_LABELS));
    write(&dir.join("t10k-labels-idx1-ubyte.gz"), &gz[..gz.len() / 2]);
    assert_mentions(
        &load_err(DatasetKind::Mnist, dir.path()),
        "t10k-labels-idx1-ubyte.gz",
    );
}

#[test]
fn idx_wrong_magic() {
    let dir = scratch("idx-magic");
    write_mnist(dir.path(), [false; 4]);
    // An image file where a label file is expected.
    write(&dir.join("train-labels-idx1-ubyte"), &idx_images(3, 28, 28));
    let msg = load_err(DatasetKind::Mnist, dir.path());
    assert_mentions(&msg, "train-labels-idx1-ubyte");
    assert!(msg.contains("magic"), "{msg}");
}

#[test]
fn idx_wrong_dims_and_count() {
    let dir = scratch("idx-dims");
    write_mnist(dir.path(), [false; 4]);
    write(&dir.join("t10k-images-idx3-ubyte"), &idx_images(2, 32, 28));
    assert_mentions(
        &load_err(DatasetKind::Mnist, dir.path()),
        "t10k-images-idx3-ubyte",
    );

    let dir = scratch("idx-count");
    write_mnist(dir.path(), [false; 4]);
    write(&dir.join("train-labels-idx1-ubyte"), &idx_labels(&[1, 2]));
    assert_mentions(
        &load_err(DatasetKind::Mnist, dir.path()),
        "train-labels-idx1-ubyte",
    );
}

/// A well-formed IDX file whose header counts 0 images names the file instead of training on
/// nothing.
#[test]
fn idx_header_count_zero_is_an_error() {
    let dir = scratch("idx-empty");
    write_mnist(dir.path(), [false; 4]);
    write(&dir.join("t10k-images-idx3-ubyte"), &idx_images(0, 28, 28));
    write(&dir.join("t10k-labels-idx1-ubyte"), &idx_labels(&[]));
    let msg = load_err(DatasetKind::Mnist, dir.path());
    assert_mentions(&msg, "t10k-images-idx3-ubyte");
    assert_mentions(&msg, "holds no images");
}

#[test]
fn idx_missing_file_and_dir() {
    let dir = scratch("idx-missing");
    write_mnist(dir.path(), [true; 4]);
    std::fs::remove_file(dir.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    let msg = load_err(DatasetKind::FashionMnist, dir.path());
    assert_mentions(&msg, "t10k-labels-idx1-ubyte");
    assert!(msg.contains("not found"), "{msg}");

    let missing = dir.join("no-such-dir");
    let msg = load_err(DatasetKind::FashionMnist, &missing);
    assert_mentions(&msg, "no-such-dir");
    assert!(
        msg.contains("apt-get install dataset-fashion-mnist"),
        "{msg}"
    );
    assert!(matches!(
        load(&spec(DatasetKind::FashionMnist, &missing)),
        Err(DataError::NotFound { .. })
    ));
}

#[test]
fn idx_label_out_of_range() {
    let dir = scratch("idx-label");
    write_mnist(dir.path(), [false, true, false, false]);
    write(
        &dir.join("train-labels-idx1-ubyte.gz"),
        &gzip(&idx_labels(&[1, 10, 2])),
    );
    let err = load(&spec(DatasetKind::Mnist, dir.path())).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::LabelOutOfRange {
                index: 1,
                label: 10,
                ..
            }
        ),
        "{err}"
    );
    assert_mentions(&err.to_string(), "train-labels-idx1-ubyte.gz");
}

// ---------------------------------------------------------------------------------------------
// Real data
// ---------------------------------------------------------------------------------------------

#[test]
fn real_debian_fashion_mnist() {
    let dir = Path::new("/usr/share/datasets/fashion-mnist");
    if !dir.is_dir() {
        eprintln!(
            "skipping: {} not found (apt-get install dataset-fashion-mnist)",
            dir.display()
        );
        return;
    }
    let s = load(&DataSpec::default()).unwrap();
    assert_eq!(s.train.len(), 60000);
    assert_eq!(s.test.len(), 10000);
    assert_eq!(s.train.shape(), (1, 28, 28));
    assert_eq!(s.test.shape(), (1, 28, 28));
    let mut counts = [0usize; 10];
    for &l in s.train.labels() {
        counts[l as usize] += 1;
    }
    assert_eq!(counts, [6000; 10]);
    let cfg = LoaderConfig {
        batch_size: 1000,
        workers: 2,
        ..LoaderConfig::default()
    };
    let loader = Loader::new(Arc::new(s.test), s.test_transform, &cfg).unwrap();
    assert_eq!(loader.steps_per_epoch(), 10);
    let b = loader.last().unwrap();
    assert_eq!(b.images.size(), vec![1000, 1, 28, 28]);
    let mean = b.images.mean(tch::Kind::Float).double_value(&[]);
    assert!((-1.0..0.0).contains(&mean), "mean {mean}");
}
