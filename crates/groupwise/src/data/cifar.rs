//! CIFAR-10 and CIFAR-100, binary versions.

use std::path::{Path, PathBuf};

use super::{read_file, stored_label, DataError, Dataset, DatasetKind};

/// Bytes of pixels per record: 3 x 32 x 32, channel-major.
const PIXELS: usize = 3 * 32 * 32;

/// Record layout of one CIFAR variant.
struct Layout {
    /// Number of classes of each label byte at the start of a record (all are range-checked).
    label_classes: &'static [usize],
    /// Which label byte is the label used.
    label_at: usize,
}

const CIFAR10: Layout = Layout {
    label_classes: &[10],
    label_at: 0,
};

/// CIFAR-100 records hold the coarse label (20 classes) then the fine label (100 classes).
const CIFAR100: Layout = Layout {
    label_classes: &[20, 100],
    label_at: 1,
};

/// Reads one binary batch file of records `labels..., 3072 pixel bytes`.
fn read_batch(path: &Path, layout: &Layout) -> Result<Dataset, DataError> {
    let bytes = read_file(path)?;
    let label_bytes = layout.label_classes.len();
    let record = label_bytes + PIXELS;
    if bytes.is_empty() || !bytes.len().is_multiple_of(record) {
        return Err(DataError::format(
            path,
            format!(
                "length {} is not a non-zero multiple of the record size {record} \
                 ({label_bytes} label byte(s) + {PIXELS} pixel bytes): truncated or wrong file?",
                bytes.len()
            ),
        ));
    }
    let n = bytes.len() / record;
    let mut images = Vec::with_capacity(n * PIXELS);
    let mut labels = Vec::with_capacity(n);
    for (index, r) in bytes.chunks_exact(record).enumerate() {
        for (&l, &classes) in r.iter().zip(layout.label_classes) {
            stored_label(path, index, i64::from(l), 0, classes as i64 - 1)?;
        }
        labels.push(u16::from(r[layout.label_at]));
        images.extend_from_slice(&r[label_bytes..]);
    }
    let classes = layout.label_classes[layout.label_at];
    Dataset::new(images, labels, (3, 32, 32), classes)
}

/// The directory holding the files: `dir` itself, or `dir/sub` (the extracted tarball's folder)
/// when `dir` lacks the first file but `dir/sub` has it. Every file must exist there, so a missing
/// one is reported before anything is read.
fn resolve(
    dir: &Path,
    sub: &str,
    files: &[String],
    kind: DatasetKind,
) -> Result<PathBuf, DataError> {
    kind.require_dir(dir)?;
    let nested = dir.join(sub);
    let base = match files.first() {
        Some(first) if !dir.join(first).exists() && nested.join(first).exists() => nested,
        _ => dir.to_path_buf(),
    };
    if let Some(path) = files.iter().map(|f| base.join(f)).find(|p| !p.is_file()) {
        let detail = format!(
            "looked in {} and {}",
            dir.display(),
            dir.join(sub).display()
        );
        return Err(kind.not_found(path, Some(detail)));
    }
    Ok(base)
}

/// Reads and concatenates `files` (in order) from `dir`.
fn read_all(dir: &Path, files: &[String], layout: &Layout) -> Result<Dataset, DataError> {
    let mut out: Option<Dataset> = None;
    for f in files {
        let part = read_batch(&dir.join(f), layout)?;
        match &mut out {
            None => out = Some(part),
            Some(d) => d.append(part),
        }
    }
    out.ok_or_else(|| DataError::Invalid("no files to read".into()))
}

/// Reads CIFAR-10 (binary version) from `dir` or `dir/cifar-10-batches-bin`: the five training
/// batches concatenated in order, and the test batch.
pub fn load_cifar10(dir: &Path) -> Result<(Dataset, Dataset), DataError> {
    let train: Vec<String> = (1..=5).map(|i| format!("data_batch_{i}.bin")).collect();
    let test = vec!["test_batch.bin".to_string()];
    let all: Vec<String> = train.iter().chain(&test).cloned().collect();
    let dir = resolve(dir, "cifar-10-batches-bin", &all, DatasetKind::Cifar10)?;
    Ok((
        read_all(&dir, &train, &CIFAR10)?,
        read_all(&dir, &test, &CIFAR10)?,
    ))
}

/// Reads CIFAR-100 (binary version) from `dir` or `dir/cifar-100-binary`, using the fine labels.
pub fn load_cifar100(dir: &Path) -> Result<(Dataset, Dataset), DataError> {
    let train = vec!["train.bin".to_string()];
    let test = vec!["test.bin".to_string()];
    let all: Vec<String> = train.iter().chain(&test).cloned().collect();
    let dir = resolve(dir, "cifar-100-binary", &all, DatasetKind::Cifar100)?;
    Ok((
        read_all(&dir, &train, &CIFAR100)?,
        read_all(&dir, &test, &CIFAR100)?,
    ))
}
