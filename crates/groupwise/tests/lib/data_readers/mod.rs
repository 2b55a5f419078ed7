//! Tests of the dataset readers, preprocessing and batch loader, on tiny fixtures written to a
//! temporary directory (plus the real Debian Fashion-MNIST files when installed).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use groupwise::data::{
    augment_into, load, read_npz_array, Augment, Crop, DataError, DataSpec, Dataset, DatasetKind,
    Loader, LoaderConfig, NpyData, Padding, SyntheticSpec, Transform,
};
use tch::Tensor;

use crate::common::scratch;

// ---------------------------------------------------------------------------------------------
// Fixture helpers
// ---------------------------------------------------------------------------------------------

pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

pub(crate) fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

/// Pixel `p` of MNIST-like image `i`.
fn mnist_pixel(i: usize, p: usize) -> u8 {
    ((i * 31 + p * 7) % 256) as u8
}

pub(crate) fn idx_images(n: usize, rows: u32, cols: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(2051u32.to_be_bytes());
    b.extend((n as u32).to_be_bytes());
    b.extend(rows.to_be_bytes());
    b.extend(cols.to_be_bytes());
    let size = (rows * cols) as usize;
    for i in 0..n {
        b.extend((0..size).map(|p| mnist_pixel(i, p)));
    }
    b
}

pub(crate) fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(2049u32.to_be_bytes());
    b.extend((labels.len() as u32).to_be_bytes());
    b.extend_from_slice(labels);
    b
}

pub(crate) const TRAIN_LABELS: [u8; 3] = [1, 0, 9];
pub(crate) const TEST_LABELS: [u8; 2] = [7, 3];

/// Writes a valid MNIST-like directory; `gz` selects which files are gzipped.
pub(crate) fn write_mnist(dir: &Path, gz: [bool; 4]) {
    let files = [
        ("train-images-idx3-ubyte", idx_images(3, 28, 28)),
        ("train-labels-idx1-ubyte", idx_labels(&TRAIN_LABELS)),
        ("t10k-images-idx3-ubyte", idx_images(2, 28, 28)),
        ("t10k-labels-idx1-ubyte", idx_labels(&TEST_LABELS)),
    ];
    for ((name, bytes), gz) in files.into_iter().zip(gz) {
        if gz {
            write(&dir.join(format!("{name}.gz")), &gzip(&bytes));
        } else {
            write(&dir.join(name), &bytes);
        }
    }
}

pub(crate) fn spec(kind: DatasetKind, dir: &Path) -> DataSpec {
    DataSpec {
        kind,
        path: Some(dir.to_path_buf()),
        ..DataSpec::default()
    }
}

fn load_err(kind: DatasetKind, dir: &Path) -> String {
    match load(&spec(kind, dir)) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(msg: &str, file: &str) {
    assert!(msg.contains(file), "error `{msg}` should name `{file}`");
}

fn to_f32(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&t.flatten(0, -1)).unwrap()
}

fn to_i64(t: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(&t.flatten(0, -1)).unwrap()
}

// ---------------------------------------------------------------------------------------------
// IDX (MNIST / Fashion-MNIST)
// ---------------------------------------------------------------------------------------------

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
// CIFAR
// ---------------------------------------------------------------------------------------------

fn cifar_pixel(id: usize, p: usize) -> u8 {
    ((id * 13 + p * 3 + p / 1024) % 256) as u8
}

/// A CIFAR record with the given label bytes and pixels derived from `id`.
pub(crate) fn cifar_record(labels: &[u8], id: usize) -> Vec<u8> {
    let mut r = labels.to_vec();
    r.extend((0..3072).map(|p| cifar_pixel(id, p)));
    r
}

/// CIFAR-10: batch `b` (1..=5) holds images 2(b-1), 2(b-1)+1 with labels id % 10; test holds id 100.
pub(crate) fn write_cifar10(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for b in 1..=5 {
        let mut bytes = Vec::new();
        for id in [2 * (b - 1), 2 * (b - 1) + 1] {
            bytes.extend(cifar_record(&[(id % 10) as u8], id));
        }
        write(&dir.join(format!("data_batch_{b}.bin")), &bytes);
    }
    write(&dir.join("test_batch.bin"), &cifar_record(&[4], 100));
}

#[test]
fn cifar10_reads_batches_in_order() {
    for nested in [false, true] {
        let root = scratch("cifar10");
        let dir = if nested {
            root.join("cifar-10-batches-bin")
        } else {
            root.path().to_path_buf()
        };
        write_cifar10(&dir);
        let s = load(&spec(DatasetKind::Cifar10, root.path())).unwrap();
        assert_eq!(s.train.len(), 10);
        assert_eq!(s.test.len(), 1);
        assert_eq!(s.train.shape(), (3, 32, 32));
        assert_eq!(s.train.classes(), 10);
        for id in 0..10 {
            assert_eq!(s.train.label(id), (id % 10) as u16);
            let expected: Vec<u8> = (0..3072).map(|p| cifar_pixel(id, p)).collect();
            assert_eq!(s.train.image(id), expected.as_slice());
        }
        assert_eq!(s.test.label(0), 4);
        assert_eq!(
            s.train_transform.augment,
            Augment::PadCropFlip {
                pad: 4,
                padding: Padding::Reflect
            }
        );
        assert_eq!(s.test_transform.augment, Augment::None);
        let v = s.test_transform.normalize_value(1, 0);
        assert!(
            (v - (-(123.0 / 255.0) / (62.1 / 255.0))).abs() < 1e-5,
            "{v}"
        );
    }
}

#[test]
fn cifar10_bad_length_label_and_missing() {
    let dir = scratch("cifar10-bad");
    write_cifar10(dir.path());
    let mut bytes = cifar_record(&[1], 0);
    bytes.extend_from_slice(&[0; 100]);
    write(&dir.join("data_batch_3.bin"), &bytes);
    let msg = load_err(DatasetKind::Cifar10, dir.path());
    assert_mentions(&msg, "data_batch_3.bin");

    write_cifar10(dir.path());
    write(&dir.join("test_batch.bin"), &cifar_record(&[10], 0));
    let err = load(&spec(DatasetKind::Cifar10, dir.path())).unwrap_err();
    assert!(matches!(err, DataError::LabelOutOfRange { .. }), "{err}");
    assert_mentions(&err.to_string(), "test_batch.bin");

    write_cifar10(dir.path());
    std::fs::remove_file(dir.join("data_batch_5.bin")).unwrap();
    assert_mentions(
        &load_err(DatasetKind::Cifar10, dir.path()),
        "data_batch_5.bin",
    );

    assert!(matches!(
        load(&DataSpec {
            kind: DatasetKind::Cifar10,
            ..DataSpec::default()
        }),
        Err(DataError::NoPath { .. })
    ));
}

#[test]
fn cifar100_uses_fine_labels() {
    for nested in [false, true] {
        let root = scratch("cifar100");
        let dir = if nested {
            root.join("cifar-100-binary")
        } else {
            root.path().to_path_buf()
        };
        std::fs::create_dir_all(&dir).unwrap();
        let mut train = cifar_record(&[3, 77], 0);
        train.extend(cifar_record(&[19, 99], 1));
        write(&dir.join("train.bin"), &train);
        write(&dir.join("test.bin"), &cifar_record(&[0, 5], 2));
        let s = load(&spec(DatasetKind::Cifar100, root.path())).unwrap();
        assert_eq!(s.train.labels(), &[77, 99]);
        assert_eq!(s.test.labels(), &[5]);
        assert_eq!(s.train.classes(), 100);
        let expected: Vec<u8> = (0..3072).map(|p| cifar_pixel(1, p)).collect();
        assert_eq!(s.train.image(1), expected.as_slice());

        // A fine label of 100 is out of range.
        write(&dir.join("test.bin"), &cifar_record(&[0, 100], 2));
        let msg = load_err(DatasetKind::Cifar100, root.path());
        assert_mentions(&msg, "test.bin");
        // A record of CIFAR-10 size is not a CIFAR-100 record.
        write(&dir.join("test.bin"), &cifar_record(&[0], 2));
        assert_mentions(&load_err(DatasetKind::Cifar100, root.path()), "test.bin");
    }
}

// ---------------------------------------------------------------------------------------------
// npz / ImageNet32
// ---------------------------------------------------------------------------------------------

/// A `.npy` file: header version 1 or 2, padded so the data starts at a multiple of 64.
pub(crate) fn npy(
    descr: &str,
    shape: &[usize],
    data: &[u8],
    version: u8,
    fortran: bool,
) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = if shape.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let fortran = if fortran { "True" } else { "False" };
    let dict =
        format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape_text}, }}");
    npy_with_dict(&dict, data, version)
}

/// A `.npy` file whose header is `dict` as given (valid or not), padded as [`npy`] pads it.
pub(crate) fn npy_with_dict(dict: &str, data: &[u8], version: u8) -> Vec<u8> {
    let mut header = dict.to_string();
    let prefix = if version == 1 { 10 } else { 12 };
    while !(prefix + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY".to_vec();
    out.push(version);
    out.push(0);
    if version == 1 {
        out.extend((header.len() as u16).to_le_bytes());
    } else {
        out.extend((header.len() as u32).to_le_bytes());
    }
    out.extend(header.as_bytes());
    out.extend_from_slice(data);
    out
}

pub(crate) fn npz(path: &Path, members: &[(&str, Vec<u8>)], deflate: bool) {
    let file = std::fs::File::create(path).unwrap();
    let mut zw = zip::ZipWriter::new(file);
    let method = if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    let opts = zip::write::SimpleFileOptions::default().compression_method(method);
    for (name, bytes) in members {
        zw.start_file(*name, opts).unwrap();
        zw.write_all(bytes).unwrap();
    }
    zw.finish().unwrap();
}

/// Encodes `labels` with numpy dtype `descr`.
pub(crate) fn encode_labels(descr: &str, labels: &[i64]) -> Vec<u8> {
    let mut out = Vec::new();
    for &l in labels {
        match descr {
            "<i8" => out.extend(l.to_le_bytes()),
            "<i4" => out.extend((l as i32).to_le_bytes()),
            "<i2" => out.extend((l as i16).to_le_bytes()),
            ">i4" => out.extend((l as i32).to_be_bytes()),
            "|u1" => out.push(l as u8),
            other => panic!("no encoder for {other}"),
        }
    }
    out
}

fn imagenet_pixel(id: usize, p: usize) -> u8 {
    ((id * 101 + p * 5 + p / 1024 * 17) % 256) as u8
}

/// The members of one ImageNet32 npz with images `ids` (labels 1-based `id % 1000 + 1`).
pub(crate) fn imagenet_members(
    ids: &[usize],
    descr: &str,
    version: u8,
) -> Vec<(&'static str, Vec<u8>)> {
    let mut data = Vec::new();
    for &id in ids {
        data.extend((0..3072).map(|p| imagenet_pixel(id, p)));
    }
    let labels: Vec<i64> = ids.iter().map(|&id| (id % 1000 + 1) as i64).collect();
    vec![
        (
            "data.npy",
            npy("|u1", &[ids.len(), 3072], &data, version, false),
        ),
        (
            "labels.npy",
            npy(
                descr,
                &[ids.len()],
                &encode_labels(descr, &labels),
                version,
                false,
            ),
        ),
        ("mean.npy", npy("|u1", &[3], &[1, 2, 3], 1, false)),
    ]
}

/// One ImageNet32 npz with images `ids` (see [`imagenet_members`]).
fn write_imagenet_file(path: &Path, ids: &[usize], descr: &str, version: u8, deflate: bool) {
    npz(path, &imagenet_members(ids, descr, version), deflate);
}

/// Writes train batches 1..=10 (image ids 2(b-1)+{0,1}, id 999 in batch 10 too) and val.
pub(crate) fn write_imagenet(dir: &Path) {
    let descrs = ["<i8", "<i4", "|u1", "<i2", ">i4"];
    for b in 1..=10usize {
        let mut ids = vec![2 * (b - 1), 2 * (b - 1) + 1];
        if b == 10 {
            ids.push(999);
        }
        write_imagenet_file(
            &dir.join(format!("train_data_batch_{b}.npz")),
            &ids,
            descrs[b % descrs.len()],
            if b % 3 == 0 { 2 } else { 1 },
            b % 2 == 0,
        );
    }
    write_imagenet_file(&dir.join("val_data.npz"), &[500, 501, 502], "<i8", 1, true);
}

#[test]
fn imagenet32_reads_npz_stored_and_deflated() {
    let dir = scratch("imagenet");
    write_imagenet(dir.path());
    let s = load(&spec(DatasetKind::ImageNet32, dir.path())).unwrap();
    assert_eq!(s.train.len(), 21);
    assert_eq!(s.test.len(), 3);
    assert_eq!(s.train.shape(), (3, 32, 32));
    assert_eq!(s.train.classes(), 1000);
    let mut ids: Vec<usize> = (0..20).collect();
    ids.push(999);
    for (i, &id) in ids.iter().enumerate() {
        assert_eq!(
            s.train.label(i),
            (id % 1000) as u16,
            "label of train image {i}"
        );
        let expected: Vec<u8> = (0..3072).map(|p| imagenet_pixel(id, p)).collect();
        assert_eq!(s.train.image(i), expected.as_slice(), "train image {i}");
    }
    assert_eq!(s.train.label(20), 999);
    assert_eq!(s.test.labels(), &[500, 501, 502]);
    assert_eq!(
        s.train_transform.augment,
        Augment::PadCropFlip {
            pad: 4,
            padding: Padding::Zero
        }
    );
    let v = s.test_transform.normalize_value(2, 255);
    assert!((v - (1.0 - 0.406) / 0.225).abs() < 1e-5, "{v}");
}

#[test]
fn npz_array_reader() {
    let dir = scratch("npz");
    for deflate in [false, true] {
        let path = dir.join(format!("a-{deflate}.npz"));
        let values = [-3i64, 0, 7, 1 << 40];
        npz(
            &path,
            &[
                (
                    "x.npy",
                    npy("<i8", &[2, 2], &encode_labels("<i8", &values), 2, false),
                ),
                ("y.npy", npy("|u1", &[3], &[9, 8, 7], 1, false)),
                (
                    "z.npy",
                    npy("<i2", &[2], &encode_labels("<i2", &[-2, 5]), 1, false),
                ),
            ],
            deflate,
        );
        let x = read_npz_array(&path, "x").unwrap();
        assert_eq!(x.shape, vec![2, 2]);
        assert_eq!(x.data, NpyData::Int(values.to_vec()));
        let y = read_npz_array(&path, "y").unwrap();
        assert_eq!(y.data, NpyData::U8(vec![9, 8, 7]));
        assert_eq!(
            read_npz_array(&path, "z").unwrap().data,
            NpyData::Int(vec![-2, 5])
        );
        let msg = read_npz_array(&path, "w").unwrap_err().to_string();
        assert_mentions(&msg, &format!("a-{deflate}.npz"));
    }
}

#[test]
fn imagenet32_errors_name_the_file() {
    let dir = scratch("imagenet-bad");
    write_imagenet(dir.path());
    let p = dir.join("train_data_batch_4.npz");

    // Label 0 (labels are 1-based).
    let data: Vec<u8> = vec![0; 3072];
    npz(
        &p,
        &[
            ("data.npy", npy("|u1", &[1, 3072], &data, 1, false)),
            (
                "labels.npy",
                npy("<i8", &[1], &encode_labels("<i8", &[0]), 1, false),
            ),
        ],
        true,
    );
    let err = load(&spec(DatasetKind::ImageNet32, dir.path())).unwrap_err();
    assert!(
        matches!(err, DataError::LabelOutOfRange { label: 0, .. }),
        "{err}"
    );
    assert_mentions(&err.to_string(), "train_data_batch_4.npz");

    // Fortran order.
    npz(
        &p,
        &[
            ("data.npy", npy("|u1", &[1, 3072], &data, 1, true)),
            (
                "labels.npy",
                npy("<i8", &[1], &encode_labels("<i8", &[3]), 1, false),
            ),
        ],
        false,
    );
    let msg = load_err(DatasetKind::ImageNet32, dir.path());
    assert_mentions(&msg, "train_data_batch_4.npz");
    assert!(msg.contains("Fortran"), "{msg}");

    // Data shorter than its shape.
    npz(
        &p,
        &[
            ("data.npy", npy("|u1", &[2, 3072], &data, 1, false)),
            (
                "labels.npy",
                npy("<i8", &[2], &encode_labels("<i8", &[3, 4]), 1, false),
            ),
        ],
        true,
    );
    assert_mentions(
        &load_err(DatasetKind::ImageNet32, dir.path()),
        "train_data_batch_4.npz",
    );

    // Wrong row size, label count mismatch, unsupported dtype, missing member, not a zip.
    let cases: Vec<Vec<(&str, Vec<u8>)>> = vec![
        vec![
            ("data.npy", npy("|u1", &[1, 3071], &data[..3071], 1, false)),
            (
                "labels.npy",
                npy("<i8", &[1], &encode_labels("<i8", &[3]), 1, false),
            ),
        ],
        vec![
            ("data.npy", npy("|u1", &[1, 3072], &data, 1, false)),
            (
                "labels.npy",
                npy("<i8", &[2], &encode_labels("<i8", &[3, 4]), 1, false),
            ),
        ],
        vec![
            ("data.npy", npy("|u1", &[1, 3072], &data, 1, false)),
            ("labels.npy", npy("<f4", &[1], &[0, 0, 128, 63], 1, false)),
        ],
        vec![("data.npy", npy("|u1", &[1, 3072], &data, 1, false))],
    ];
    for members in cases {
        npz(&p, &members, false);
        assert_mentions(
            &load_err(DatasetKind::ImageNet32, dir.path()),
            "train_data_batch_4.npz",
        );
    }
    write(&p, b"not a zip file at all");
    assert_mentions(
        &load_err(DatasetKind::ImageNet32, dir.path()),
        "train_data_batch_4.npz",
    );

    // A missing file is reported before anything is read.
    write_imagenet(dir.path());
    std::fs::remove_file(dir.join("val_data.npz")).unwrap();
    assert_mentions(
        &load_err(DatasetKind::ImageNet32, dir.path()),
        "val_data.npz",
    );
}

// ---------------------------------------------------------------------------------------------
// Synthetic data, spec
// ---------------------------------------------------------------------------------------------

fn synthetic_spec(seed: u64) -> DataSpec {
    DataSpec {
        kind: DatasetKind::Synthetic,
        synthetic: SyntheticSpec {
            channels: 2,
            size: 5,
            classes: 4,
            train: 40,
            test: 20,
        },
        seed,
        ..DataSpec::default()
    }
}

#[test]
fn synthetic_is_deterministic_and_learnable() {
    let a = load(&synthetic_spec(7)).unwrap();
    let b = load(&synthetic_spec(7)).unwrap();
    let c = load(&synthetic_spec(8)).unwrap();
    assert_eq!(a.train, b.train);
    assert_eq!(a.test, b.test);
    assert_ne!(a.train.images(), c.train.images());
    assert_eq!(a.train.shape(), (2, 5, 5));
    assert_eq!(a.train.len(), 40);
    assert_eq!(a.test.len(), 20);
    assert_eq!(a.train.classes(), 4);
    assert_ne!(a.train.images(), a.test.images());

    // Nearest class mean (from train) classifies the test split.
    let size = a.train.image_size();
    let mut means = vec![vec![0f64; size]; 4];
    let mut counts = [0usize; 4];
    for i in 0..a.train.len() {
        let l = a.train.label(i) as usize;
        counts[l] += 1;
        for (m, &p) in means[l].iter_mut().zip(a.train.image(i)) {
            *m += f64::from(p);
        }
    }
    for (m, n) in means.iter_mut().zip(counts) {
        m.iter_mut().for_each(|v| *v /= n as f64);
    }
    let mut correct = 0;
    for i in 0..a.test.len() {
        let dist = |m: &Vec<f64>| -> f64 {
            m.iter()
                .zip(a.test.image(i))
                .map(|(m, &p)| (m - f64::from(p)).powi(2))
                .sum()
        };
        let best = (0..4)
            .min_by(|&x, &y| dist(&means[x]).total_cmp(&dist(&means[y])))
            .unwrap();
        correct += usize::from(best == a.test.label(i) as usize);
    }
    assert!(correct >= 18, "{correct}/20 correct");
}

#[test]
fn train_subset_is_seeded() {
    let mut s = synthetic_spec(1);
    s.train_subset = Some(10);
    let a = load(&s).unwrap();
    let b = load(&s).unwrap();
    assert_eq!(a.train.len(), 10);
    assert_eq!(a.train, b.train);
    assert_eq!(a.test.len(), 20);
    s.train_subset = Some(41);
    assert!(matches!(load(&s), Err(DataError::Invalid(_))));
    s.train_subset = Some(0);
    let err = load(&s).unwrap_err().to_string();
    assert!(
        err.contains("--train-subset 0 must be between 1 and 40"),
        "{err}"
    );
}

/// A split without images is an error, not a run that trains or tests on nothing.
#[test]
fn empty_splits_are_errors() {
    let mut s = synthetic_spec(1);
    s.synthetic.test = 0;
    let err = load(&s).unwrap_err();
    assert!(
        matches!(err, DataError::Empty { split: "test", .. }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "--synthetic: the test split holds no images"
    );
    let mut s = synthetic_spec(1);
    s.synthetic.train = 0;
    let err = load(&s).unwrap_err().to_string();
    assert!(err.contains("the training split holds no images"), "{err}");
}

#[test]
fn spec_serde_names() {
    for (kind, name) in [
        (DatasetKind::FashionMnist, "fashion-mnist"),
        (DatasetKind::Mnist, "mnist"),
        (DatasetKind::Cifar10, "cifar10"),
        (DatasetKind::Cifar100, "cifar100"),
        (DatasetKind::ImageNet32, "imagenet32"),
        (DatasetKind::Synthetic, "synthetic"),
    ] {
        assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{name}\""));
        assert_eq!(name.parse::<DatasetKind>().unwrap(), kind);
    }
    let s: DataSpec =
        serde_json::from_str(r#"{"kind": "cifar10", "path": "/data/c10", "train_subset": 5}"#)
            .unwrap();
    assert_eq!(s.kind, DatasetKind::Cifar10);
    assert_eq!(s.path.as_deref(), Some(Path::new("/data/c10")));
    assert_eq!(s.train_subset, Some(5));
    assert_eq!(s.synthetic, SyntheticSpec::default());
    let back: DataSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);
    assert_eq!(
        DatasetKind::FashionMnist.default_dir(),
        Some(Path::new("/usr/share/datasets/fashion-mnist"))
    );
    assert_eq!(DatasetKind::ImageNet32.default_dir(), None);
}

// ---------------------------------------------------------------------------------------------
// Augmentation and normalisation
// ---------------------------------------------------------------------------------------------

/// Reference crop computed with libtorch's own padding ops.
fn torch_reference(
    img: &[u8],
    shape: (usize, usize, usize),
    pad: usize,
    padding: Padding,
    crop: Crop,
) -> Vec<u8> {
    let (c, h, w) = shape;
    let t = Tensor::from_slice(img)
        .to_kind(tch::Kind::Float)
        .view([1, c as i64, h as i64, w as i64]);
    let p = pad as i64;
    let padded = match padding {
        Padding::Reflect => t.reflection_pad2d([p, p, p, p]),
        Padding::Zero => t.constant_pad_nd([p, p, p, p]),
    };
    let mut out = padded
        .narrow(2, crop.dy as i64, h as i64)
        .narrow(3, crop.dx as i64, w as i64);
    if crop.flip {
        out = out.flip([3]);
    }
    to_f32(&out).into_iter().map(|v| v as u8).collect()
}

#[test]
fn augment_matches_hand_computed_and_torch() {
    // One channel, 3x4 image with values 10*y + x.
    let img: Vec<u8> = (0..3)
        .flat_map(|y| (0..4).map(move |x| 10 * y + x))
        .collect();
    let mut out = vec![0u8; 12];
    // Reflect pad 2, crop at the top-left corner: rows -2..1 -> 2,1,0; cols -2..2 -> 2,1,0,1.
    let crop = Crop {
        dy: 0,
        dx: 0,
        flip: false,
    };
    augment_into(&img, (1, 3, 4), 2, Padding::Reflect, crop, &mut out);
    assert_eq!(out, vec![22, 21, 20, 21, 12, 11, 10, 11, 2, 1, 0, 1]);
    // Same crop flipped left-right.
    let flipped = Crop { flip: true, ..crop };
    augment_into(&img, (1, 3, 4), 2, Padding::Reflect, flipped, &mut out);
    assert_eq!(out, vec![21, 20, 21, 22, 11, 10, 11, 12, 1, 0, 1, 2]);
    // Zero padding, bottom-right corner: rows 2..5 -> 2,-,-; cols 2..6 -> 2,3,-,-.
    let corner = Crop {
        dy: 4,
        dx: 4,
        flip: false,
    };
    augment_into(&img, (1, 3, 4), 2, Padding::Zero, corner, &mut out);
    assert_eq!(out, vec![22, 23, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    // Centre crop without flip is the identity.
    let centre = Crop {
        dy: 2,
        dx: 2,
        flip: false,
    };
    augment_into(&img, (1, 3, 4), 2, Padding::Reflect, centre, &mut out);
    assert_eq!(out, img);

    // Exhaustive comparison with libtorch on a 3-channel 5x6 image with pad 4.
    let shape = (3, 5, 6);
    let img: Vec<u8> = (0..90).map(|i| (i * 37 % 251) as u8).collect();
    let mut out = vec![0u8; 90];
    for padding in [Padding::Reflect, Padding::Zero] {
        for dy in 0..=8 {
            for dx in 0..=8 {
                for flip in [false, true] {
                    let crop = Crop { dy, dx, flip };
                    augment_into(&img, shape, 4, padding, crop, &mut out);
                    assert_eq!(
                        out,
                        torch_reference(&img, shape, 4, padding, crop),
                        "{padding:?} {crop:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn normalisation_values() {
    let t = Transform::normalize_only(vec![0.1, 0.2, 0.3], vec![0.5, 0.25, 2.0]);
    let img = [0u8, 255, 51, 0, 255, 51];
    let mut out = [0f32; 6];
    t.normalize_into(&img, 3, &mut out);
    let expected = [
        -0.2,
        1.8,
        (0.2 - 0.2) / 0.25,
        -0.2 / 0.25,
        (1.0 - 0.3) / 2.0,
        (0.2 - 0.3) / 2.0,
    ];
    for (o, e) in out.iter().zip(expected) {
        assert!((o - e).abs() < 1e-6, "{out:?} vs {expected:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Loader
// ---------------------------------------------------------------------------------------------

fn small_dataset(n: usize) -> Arc<Dataset> {
    let size = 3 * 6 * 5;
    let images: Vec<u8> = (0..n * size).map(|i| (i * 7 % 256) as u8).collect();
    let labels: Vec<u16> = (0..n).map(|i| (i % 10) as u16).collect();
    Arc::new(Dataset::new(images, labels, (3, 6, 5), 10).unwrap())
}

fn aug_transform() -> Transform {
    Transform {
        mean: vec![0.5, 0.4, 0.3],
        std: vec![0.2, 0.3, 0.4],
        augment: Augment::PadCropFlip {
            pad: 2,
            padding: Padding::Reflect,
        },
    }
}

fn collect(ds: &Arc<Dataset>, t: &Transform, cfg: &LoaderConfig) -> Vec<(Vec<f32>, Vec<i64>)> {
    let loader = Loader::new(Arc::clone(ds), t.clone(), cfg).unwrap();
    let steps = loader.steps_per_epoch();
    let batches: Vec<_> = loader
        .enumerate()
        .map(|(i, b)| {
            assert_eq!(b.index, i);
            (to_f32(&b.images), to_i64(&b.labels))
        })
        .collect();
    assert_eq!(batches.len(), steps);
    batches
}

#[test]
fn loader_is_deterministic_across_workers() {
    let ds = small_dataset(37);
    let t = aug_transform();
    let cfg = LoaderConfig {
        batch_size: 8,
        shuffle: true,
        augment: true,
        seed: 42,
        epoch: 3,
        workers: 1,
        prefetch: 2,
        drop_last: false,
    };
    let one = collect(&ds, &t, &cfg);
    assert_eq!(one.len(), 5);
    assert_eq!(one[4].1.len(), 5);
    for workers in [0, 3, 8] {
        for prefetch in [0, 1, 4] {
            let other = collect(
                &ds,
                &t,
                &LoaderConfig {
                    workers,
                    prefetch,
                    ..cfg.clone()
                },
            );
            assert!(one == other, "workers {workers} prefetch {prefetch} differ");
        }
    }
    // Shuffling visits every image once.
    let mut labels: Vec<i64> = one.iter().flat_map(|b| b.1.clone()).collect();
    labels.sort_unstable();
    let mut expected: Vec<i64> = (0..37).map(|i| i % 10).collect();
    expected.sort_unstable();
    assert_eq!(labels, expected);
    // Another epoch or seed gives other batches.
    let other_epoch = collect(
        &ds,
        &t,
        &LoaderConfig {
            epoch: 4,
            ..cfg.clone()
        },
    );
    assert!(one != other_epoch);
    let other_seed = collect(
        &ds,
        &t,
        &LoaderConfig {
            seed: 43,
            ..cfg.clone()
        },
    );
    assert!(one != other_seed);
    // Same shuffle, augmentation off: other pixels, same labels.
    let plain = collect(
        &ds,
        &t,
        &LoaderConfig {
            augment: false,
            ..cfg.clone()
        },
    );
    assert!(plain.iter().zip(&one).all(|(a, b)| a.1 == b.1));
    assert!(plain.iter().zip(&one).any(|(a, b)| a.0 != b.0));
}

#[test]
fn loader_without_shuffle_keeps_order_and_normalises() {
    let ds = small_dataset(10);
    let t = aug_transform();
    let cfg = LoaderConfig {
        batch_size: 4,
        workers: 2,
        ..LoaderConfig::default()
    };
    let loader = Loader::new(Arc::clone(&ds), t.clone(), &cfg).unwrap();
    assert_eq!(loader.steps_per_epoch(), 3);
    assert_eq!(loader.len(), 3);
    let batches: Vec<_> = loader.collect();
    assert_eq!(batches[0].images.size(), vec![4, 3, 6, 5]);
    assert_eq!(batches[2].images.size(), vec![2, 3, 6, 5]);
    assert_eq!(batches[2].images.kind(), tch::Kind::Float);
    assert_eq!(batches[2].labels.kind(), tch::Kind::Int64);
    let mut pos = 0;
    for b in &batches {
        let px = to_f32(&b.images);
        let labels = to_i64(&b.labels);
        for (k, &l) in labels.iter().enumerate() {
            assert_eq!(l, i64::from(ds.label(pos)));
            let img = ds.image(pos);
            for (j, &p) in img.iter().enumerate() {
                let c = j / 30;
                let expected = (f32::from(p) / 255.0 - t.mean[c]) / t.std[c];
                assert!((px[k * 90 + j] - expected).abs() < 1e-5);
            }
            pos += 1;
        }
    }
    assert_eq!(pos, 10);

    let dropped = Loader::new(
        Arc::clone(&ds),
        t,
        &LoaderConfig {
            drop_last: true,
            ..cfg
        },
    )
    .unwrap();
    assert_eq!(dropped.steps_per_epoch(), 2);
    assert_eq!(dropped.count(), 2);
    assert_eq!(Loader::steps_for(10, 4, false), 3);
    assert_eq!(Loader::steps_for(8, 4, true), 2);
}

#[test]
fn loader_augmentation_matches_augment_into() {
    // With augmentation, every output image is one of the valid crops of its source image.
    let ds = small_dataset(6);
    let t = aug_transform();
    let cfg = LoaderConfig {
        batch_size: 6,
        augment: true,
        seed: 5,
        workers: 1,
        ..LoaderConfig::default()
    };
    let batch = Loader::new(Arc::clone(&ds), t.clone(), &cfg)
        .unwrap()
        .next()
        .unwrap();
    let px = to_f32(&batch.images);
    let mut changed = 0;
    for i in 0..6 {
        let got = &px[i * 90..(i + 1) * 90];
        let mut found = false;
        for dy in 0..=4 {
            for dx in 0..=4 {
                for flip in [false, true] {
                    let mut aug = vec![0u8; 90];
                    let crop = Crop { dy, dx, flip };
                    augment_into(ds.image(i), (3, 6, 5), 2, Padding::Reflect, crop, &mut aug);
                    let mut norm = vec![0f32; 90];
                    t.normalize_into(&aug, 3, &mut norm);
                    if norm.iter().zip(got).all(|(a, b)| (a - b).abs() < 1e-6) {
                        found = true;
                        changed += usize::from(dy != 2 || dx != 2 || flip);
                    }
                }
            }
        }
        assert!(found, "image {i} is not a crop of its source");
    }
    assert!(changed > 0, "augmentation never changed an image");
}

#[test]
fn loader_rejects_bad_settings() {
    let ds = small_dataset(4);
    let cfg = LoaderConfig {
        batch_size: 0,
        ..LoaderConfig::default()
    };
    assert!(Loader::new(Arc::clone(&ds), aug_transform(), &cfg).is_err());
    let bad = Transform::normalize_only(vec![0.5, 0.5], vec![0.5, 0.5]);
    assert!(Loader::new(ds, bad, &LoaderConfig::default()).is_err());
}

#[test]
fn dropping_loader_early_does_not_hang() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let ds = small_dataset(400);
        let cfg = LoaderConfig {
            batch_size: 2,
            shuffle: true,
            augment: true,
            workers: 3,
            prefetch: 1,
            ..LoaderConfig::default()
        };
        for take in [0, 1, 5] {
            let mut loader = Loader::new(Arc::clone(&ds), aug_transform(), &cfg).unwrap();
            for _ in 0..take {
                loader.next().unwrap();
            }
            drop(loader);
        }
        tx.send(()).unwrap();
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("dropping a loader early hung");
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
