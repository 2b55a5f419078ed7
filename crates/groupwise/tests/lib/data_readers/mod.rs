//! Tests of the dataset readers, preprocessing and batch loader, on tiny fixtures written to a
//! temporary directory (plus the real Debian Fashion-MNIST files when installed).
//!
//! This module holds the fixture writers (also used by `corruption`); each submodule tests one
//! format or stage: `idx`, `cifar`, `npz` (ImageNet32), `spec` (synthetic data and the spec),
//! `transform` (augmentation and normalisation) and `loader`.

use std::io::Write;
use std::path::Path;

use groupwise::data::{load, DataSpec, DatasetKind};
use tch::Tensor;

mod cifar;
mod idx;
mod loader;
mod npz;
mod spec;
mod transform;

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
