//! IDX files (MNIST, Fashion-MNIST), plain or gzipped.

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use super::{read_file, stored_label, DataError, Dataset, DatasetKind};

/// Magic number of an IDX file of unsigned bytes with 3 dimensions (images).
const IMAGES_MAGIC: u32 = 2051;
/// Magic number of an IDX file of unsigned bytes with 1 dimension (labels).
const LABELS_MAGIC: u32 = 2049;
/// MNIST-like images are 28x28.
const SIDE: usize = 28;
/// MNIST-like datasets have 10 classes.
const CLASSES: usize = 10;

/// Reads a file, gunzipping it when its name ends in `.gz`.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = read_file(path)?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::with_capacity(raw.len() * 4);
        GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| {
                DataError::format(
                    path,
                    format!("cannot decompress (truncated or corrupt gzip): {e}"),
                )
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Checks the magic number and that the (decompressed) length is `header + payload` exactly.
fn check_header(
    path: &Path,
    bytes: &[u8],
    magic: u32,
    header: usize,
    what: &str,
) -> Result<(), DataError> {
    if bytes.len() < header {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected: header as u64,
            actual: bytes.len() as u64,
        });
    }
    let found = be_u32(bytes, 0);
    if found != magic {
        return Err(DataError::format(
            path,
            format!("bad magic number {found} (expected {magic}: an IDX {what} file)"),
        ));
    }
    Ok(())
}

fn check_length(path: &Path, bytes: &[u8], expected: u64) -> Result<(), DataError> {
    if bytes.len() as u64 != expected {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected,
            actual: bytes.len() as u64,
        });
    }
    Ok(())
}

/// Reads an IDX image file (magic 2051, plain or `.gz`) and returns the pixel bytes and
/// `[count, rows, cols]`.
///
/// The file length must match the header exactly.
pub fn read_idx_images(path: &Path) -> Result<(Vec<u8>, [usize; 3]), DataError> {
    let mut bytes = read_maybe_gz(path)?;
    check_header(path, &bytes, IMAGES_MAGIC, 16, "image")?;
    let dims = [be_u32(&bytes, 4), be_u32(&bytes, 8), be_u32(&bytes, 12)].map(|d| d as usize);
    if dims[1] == 0 || dims[2] == 0 {
        return Err(DataError::format(
            path,
            format!("image size {}x{} is empty", dims[1], dims[2]),
        ));
    }
    let [n, rows, cols] = dims;
    // Three u32 dimensions can multiply past u64::MAX; no file is that long.
    let expected = dims
        .iter()
        .try_fold(1u64, |size, &d| size.checked_mul(d as u64))
        .and_then(|pixels| pixels.checked_add(16))
        .ok_or_else(|| {
            DataError::format(
                path,
                format!(
                    "header claims {n} images of {rows}x{cols}: more bytes than any file holds"
                ),
            )
        })?;
    check_length(path, &bytes, expected)?;
    bytes.drain(..16);
    Ok((bytes, dims))
}

/// Reads an IDX label file (magic 2049, plain or `.gz`), checking every label is below `classes`.
///
/// The file length must match the header exactly.
pub fn read_idx_labels(path: &Path, classes: usize) -> Result<Vec<u16>, DataError> {
    let bytes = read_maybe_gz(path)?;
    check_header(path, &bytes, LABELS_MAGIC, 8, "label")?;
    let n = be_u32(&bytes, 4) as u64;
    check_length(path, &bytes, 8 + n)?;
    bytes[8..]
        .iter()
        .enumerate()
        .map(|(index, &l)| stored_label(path, index, i64::from(l), 0, classes as i64 - 1))
        .collect()
}

/// Finds `stem` or `stem.gz` in `dir` (the plain file wins).
fn find(dir: &Path, stem: &str, kind: DatasetKind) -> Result<PathBuf, DataError> {
    let plain = dir.join(stem);
    if plain.is_file() {
        return Ok(plain);
    }
    let gz = dir.join(format!("{stem}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    Err(kind.not_found(gz, Some(format!("nor {stem}"))))
}

/// The image and label files of one split (`prefix` = `train` or `t10k`).
fn split_files(dir: &Path, prefix: &str, kind: DatasetKind) -> Result<[PathBuf; 2], DataError> {
    Ok([
        find(dir, &format!("{prefix}-images-idx3-ubyte"), kind)?,
        find(dir, &format!("{prefix}-labels-idx1-ubyte"), kind)?,
    ])
}

/// Reads one split from its image and label files.
fn read_split([images_path, labels_path]: &[PathBuf; 2]) -> Result<Dataset, DataError> {
    let (images, [n, rows, cols]) = read_idx_images(images_path)?;
    if n == 0 {
        return Err(DataError::format(
            images_path,
            "holds no images (its header's count is 0)",
        ));
    }
    if rows != SIDE || cols != SIDE {
        return Err(DataError::format(
            images_path,
            format!("images are {rows}x{cols}, expected {SIDE}x{SIDE}"),
        ));
    }
    let labels = read_idx_labels(labels_path, CLASSES)?;
    if labels.len() != n {
        return Err(DataError::format(
            labels_path,
            format!(
                "holds {} labels but {} holds {n} images",
                labels.len(),
                images_path.display()
            ),
        ));
    }
    Dataset::new(images, labels, (1, rows, cols), CLASSES)
}

/// Reads MNIST or Fashion-MNIST (train and test) from the IDX files in `dir`.
///
/// All four files are located before any is read, so a missing one is reported first.
pub fn load_mnist(dir: &Path, kind: DatasetKind) -> Result<(Dataset, Dataset), DataError> {
    kind.require_dir(dir)?;
    let train = split_files(dir, "train", kind)?;
    let test = split_files(dir, "t10k", kind)?;
    Ok((read_split(&train)?, read_split(&test)?))
}
