//! [`DataError`], and the helpers every reader uses so that every error names its file: reading a
//! whole file, checking a directory exists, checking a stored label's range.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Everything that can go wrong while reading a dataset or setting up a loader.
///
/// Every variant about a file carries its path, so every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A dataset directory or file does not exist.
    #[error("{}: not found{hint}", path.display())]
    NotFound {
        /// The missing path.
        path: PathBuf,
        /// Extra guidance appended to the message (may be empty), e.g. how to install the data.
        hint: String,
    },
    /// Reading a file failed (including a corrupt or truncated gzip stream).
    #[error("{}: read error: {source}", path.display())]
    Io {
        /// The file being read.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file is shorter (or longer) than its header says.
    #[error("{}: truncated or malformed: expected {expected} bytes, found {actual}", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// The length implied by the header / record size.
        expected: u64,
        /// The actual length.
        actual: u64,
    },
    /// A file's contents do not follow the expected format (bad magic, dims, dtype...).
    #[error("{}: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A label is outside `0..classes`.
    #[error("{}: label {label} of sample {index} is out of range (expected {min}..={max})", path.display())]
    LabelOutOfRange {
        /// The file holding the label.
        path: PathBuf,
        /// Index of the sample within that file.
        index: usize,
        /// The label as stored.
        label: i64,
        /// Smallest valid stored label.
        min: i64,
        /// Largest valid stored label.
        max: i64,
    },
    /// The zip container of an `.npz` file could not be read.
    #[error("{}: zip error: {source}", path.display())]
    Zip {
        /// The archive.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: zip::result::ZipError,
    },
    /// The dataset kind has no default directory and none was given.
    #[error("dataset `{kind}` has no default location: set the data path")]
    NoPath {
        /// The dataset kind's name (`--dataset`).
        kind: &'static str,
    },
    /// A split holds no images.
    #[error("{origin}: the {split} split holds no images")]
    Empty {
        /// Where the split comes from: the dataset directory, or `--synthetic`.
        origin: String,
        /// `training` or `test`.
        split: &'static str,
    },
    /// The specification or loader settings are invalid (no file involved).
    #[error("invalid data settings: {0}")]
    Invalid(String),
}

impl DataError {
    pub(crate) fn format(path: &Path, message: impl Into<String>) -> Self {
        DataError::Format {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            DataError::NotFound {
                path: path.to_path_buf(),
                hint: String::new(),
            }
        } else {
            DataError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

/// Reads a whole file, mapping errors to [`DataError`] naming the file.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    let mut f = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut buf = Vec::new();
    if let Ok(m) = f.metadata() {
        buf.reserve(m.len() as usize);
    }
    f.read_to_end(&mut buf)
        .map_err(|e| DataError::io(path, e))?;
    Ok(buf)
}

/// A label as stored in `path` (sample `index`) mapped to `0..=max-min`, or
/// [`DataError::LabelOutOfRange`] when it lies outside `min..=max`. Every reader checks its labels here.
pub(crate) fn stored_label(
    path: &Path,
    index: usize,
    label: i64,
    min: i64,
    max: i64,
) -> Result<u16, DataError> {
    if (min..=max).contains(&label) {
        Ok((label - min) as u16)
    } else {
        Err(DataError::LabelOutOfRange {
            path: path.to_path_buf(),
            index,
            label,
            min,
            max,
        })
    }
}
