//! IDX files, plain and behind a gzip stream (itself corrupted, or valid around a corrupted file).

use groupwise::data::rng::Rng;
use groupwise::data::{load, DatasetKind};

use super::{byte_cases, gzipped, message, run, seed, Field};
use crate::common::scratch;
use crate::data_readers::{gzip, idx_images, idx_labels, spec, write_mnist, TEST_LABELS};

fn idx_image_fields() -> [Field; 4] {
    [
        Field::be("magic", 0, 4),
        Field::be("count", 4, 4),
        Field::be("rows", 8, 4),
        Field::be("cols", 12, 4),
    ]
}

fn idx_label_fields() -> [Field; 2] {
    [Field::be("magic", 0, 4), Field::be("count", 4, 4)]
}

#[test]
fn idx_files_under_corruption() {
    let seed = seed();
    let mut rng = Rng::from_parts(&[seed, 1]);
    let dir = scratch("corrupt-idx");
    write_mnist(dir.path(), [false; 4]);
    let read = || message(load(&spec(DatasetKind::Mnist, dir.path())));
    let target = dir.join("train-images-idx3-ubyte");
    let valid = idx_images(3, 28, 28);
    let cases = byte_cases(&mut rng, &valid, &idx_image_fields());
    run("IDX images", seed, &target, &valid, &cases, read);
    let target = dir.join("t10k-labels-idx1-ubyte");
    let valid = idx_labels(&TEST_LABELS);
    let cases = byte_cases(&mut rng, &valid, &idx_label_fields());
    run("IDX labels", seed, &target, &valid, &cases, read);
}

#[test]
fn gzip_files_under_corruption() {
    let seed = seed();
    let mut rng = Rng::from_parts(&[seed, 2]);
    let dir = scratch("corrupt-gz");
    write_mnist(dir.path(), [true; 4]);
    let read = || message(load(&spec(DatasetKind::Mnist, dir.path())));
    // The gzip stream corrupted, and a valid stream of a corrupted file.
    let target = dir.join("train-images-idx3-ubyte.gz");
    let inner = idx_images(3, 28, 28);
    let valid = gzip(&inner);
    let mut cases = byte_cases(&mut rng, &valid, &[]);
    cases.extend(gzipped(byte_cases(&mut rng, &inner, &idx_image_fields())));
    run("gzip IDX images", seed, &target, &valid, &cases, read);
    let target = dir.join("t10k-labels-idx1-ubyte.gz");
    let inner = idx_labels(&TEST_LABELS);
    let valid = gzip(&inner);
    let mut cases = byte_cases(&mut rng, &valid, &[]);
    cases.extend(gzipped(byte_cases(&mut rng, &inner, &idx_label_fields())));
    run("gzip IDX labels", seed, &target, &valid, &cases, read);
}
