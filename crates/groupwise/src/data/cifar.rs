//! CIFAR-10 and CIFAR-100, binary versions.

use std::path::{Path, PathBuf};

use super::{read_file, require_dir, DataError, Dataset, DatasetKind};

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
    if bytes.is_empty() || bytes.len() % record != 0 {
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
            if usize::from(l) >= classes {
                return Err(DataError::LabelOutOfRange {
                    path: path.to_path_buf(),
                    index,
                    label: i64::from(l),
                    min: 0,
                    max: classes as i64 - 1,
                });
            }
        }
        labels.push(u16::from(r[layout.label_at]));
        images.extend_from_slice(&r[label_bytes..]);
    }
    let classes = layout.label_classes[layout.label_at];
    Dataset::new(images, labels, (3, 32, 32), classes)
}

/// `dir` itself if it holds `probe`, else `dir/sub` if that does, else `dir` (so the error names
/// the file expected in the given directory).
fn resolve(dir: &Path, sub: &str, probe: &str, kind: DatasetKind) -> Result<PathBuf, DataError> {
    require_dir(dir, kind)?;
    if !dir.join(probe).exists() && dir.join(sub).join(probe).exists() {
        return Ok(dir.join(sub));
    }
    Ok(dir.to_path_buf())
}

fn read_all(
    dir: &Path,
    files: &[String],
    kind: DatasetKind,
    layout: &Layout,
) -> Result<Dataset, DataError> {
    let mut out: Option<Dataset> = None;
    for f in files {
        let path = dir.join(f);
        if !path.exists() {
            return Err(DataError::NotFound {
                path,
                hint: kind.install_hint().to_string(),
            });
        }
        let part = read_batch(&path, layout)?;
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
    let kind = DatasetKind::Cifar10;
    let dir = resolve(dir, "cifar-10-batches-bin", "data_batch_1.bin", kind)?;
    let train_files: Vec<String> = (1..=5).map(|i| format!("data_batch_{i}.bin")).collect();
    let train = read_all(&dir, &train_files, kind, &CIFAR10)?;
    let test = read_all(&dir, &["test_batch.bin".to_string()], kind, &CIFAR10)?;
    Ok((train, test))
}

/// Reads CIFAR-100 (binary version) from `dir` or `dir/cifar-100-binary`, using the fine labels.
pub fn load_cifar100(dir: &Path) -> Result<(Dataset, Dataset), DataError> {
    let kind = DatasetKind::Cifar100;
    let dir = resolve(dir, "cifar-100-binary", "train.bin", kind)?;
    let train = read_all(&dir, &["train.bin".to_string()], kind, &CIFAR100)?;
    let test = read_all(&dir, &["test.bin".to_string()], kind, &CIFAR100)?;
    Ok((train, test))
}
