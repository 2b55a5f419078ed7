//! `.npy` arrays inside `.npz` archives, and the downsampled ImageNet 32x32 dataset built on them.
//!
//! Only what the ImageNet32 files need is supported: C-order arrays of integers (signed or
//! unsigned, 1, 2, 4 or 8 bytes, any byte order) or booleans. The header is a Python dict literal
//! such as `{'descr': '<i8', 'fortran_order': False, 'shape': (128116,), }`.
//!
//! # Why this reader is not `npyz` or `ndarray-npy`
//!
//! Both were weighed against this file. Only the header parse (`Py`, `PyParser`, `read_header`,
//! `Dtype::parse`: about 220 lines) would go, for some 50 lines of glue; the rest is what
//! ImageNet32 needs and neither offers:
//!
//! * the `uint8` images of all ten training files (3.9 GB) are read with one `read_to_end` per
//!   member straight into one buffer sized from the labels; `npyz`'s typed reader decodes element
//!   by element into a new `Vec`, `ndarray-npy` into a new array per member;
//! * the labels come as `<i8`, `<i4`, `<i2`, `|u1` or big-endian, and both crates need the Rust
//!   type's size to match the dtype exactly, so a match over dtypes would stay here anyway;
//! * the checks that give the clear errors the reader tests ask for (payload against the zip
//!   member's size before allocating, nothing after the payload, the member named in every
//!   message) are this file's either way, as is the zip handling (`zip` 2; `npyz`'s `npz` feature
//!   uses `zip` 0.6, `ndarray-npy` `zip` 6).
//!
//! And the header parse they would bring costs more than it saves. Both parse the dict with
//! `py_literal`: with `npyz` that is thirteen crates new to this workspace for a three-key dict,
//! among them a PEG parser generator (`pest`, `pest_derive`, a proc macro), `num-bigint`, and
//! `psm` (stack switching in C and assembly, built with `cc`). `py_literal` rejects the Python 2
//! long suffix on shape integers (`(128116L,)`) that headers written under Python 2 can carry and
//! this parser accepts. And `npyz` allocates whatever header length the file states (up to
//! 4 GiB) before reading it, where this reader refuses one over 1 MiB with an error naming the
//! file.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use super::{stored_label, DataError, Dataset, DatasetKind};

const MAGIC: &[u8] = b"\x93NUMPY";

/// The elements of an `.npy` array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NpyData {
    /// One-byte unsigned data (`|u1`), kept as is.
    U8(Vec<u8>),
    /// Any other integer (or boolean) type, widened to `i64`.
    Int(Vec<i64>),
}

/// An array read from an `.npy` member of an `.npz` archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyArray {
    /// The dimensions (empty for a scalar).
    pub shape: Vec<usize>,
    /// The elements in C order.
    pub data: NpyData,
}

/// Element type of an array, parsed from the `descr` string (`<i8`, `|u1`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Dtype {
    signed: bool,
    size: usize,
    big_endian: bool,
}

impl Dtype {
    fn parse(descr: &str) -> Option<Dtype> {
        let (order, rest) = match descr.chars().next()? {
            c @ ('<' | '>' | '|' | '=') => (c, &descr[1..]),
            _ => ('|', descr),
        };
        let mut chars = rest.chars();
        let kind = chars.next()?;
        let size: usize = chars.as_str().parse().ok()?;
        if !matches!(size, 1 | 2 | 4 | 8) {
            return None;
        }
        let signed = match kind {
            'i' => true,
            'u' => false,
            'b' if size == 1 => false,
            _ => return None,
        };
        let big_endian = order == '>' || (order == '=' && cfg!(target_endian = "big"));
        Some(Dtype {
            signed,
            size,
            big_endian,
        })
    }

    fn is_u8(self) -> bool {
        self.size == 1 && !self.signed
    }

    fn decode(self, b: &[u8]) -> i64 {
        let mut buf = [0u8; 8];
        if self.big_endian {
            buf[8 - self.size..].copy_from_slice(b);
            buf.reverse();
        } else {
            buf[..self.size].copy_from_slice(b);
        }
        let v = u64::from_le_bytes(buf);
        if self.signed {
            // Sign-extend from `size` bytes.
            let shift = 64 - 8 * self.size as u32;
            ((v << shift) as i64) >> shift
        } else {
            v as i64
        }
    }
}

/// A value of the Python literal subset used in `.npy` headers.
#[derive(Clone, Debug, PartialEq)]
enum Py {
    Str(String),
    Bool(bool),
    Int(i64),
    Seq(Vec<Py>),
    Dict(Vec<(Py, Py)>),
    None,
}

/// How deeply values may nest in a header (numpy's own headers nest 3 deep: dict, shape tuple,
/// integer), so that a corrupt header of a million `(` cannot overflow the stack.
const MAX_DEPTH: usize = 32;

/// Recursive-descent parser for the header dict.
struct PyParser<'a> {
    s: &'a [u8],
    i: usize,
    depth: usize,
}

impl PyParser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Result<Py, String> {
        if self.depth == MAX_DEPTH {
            return Err(format!("values nested more than {MAX_DEPTH} deep"));
        }
        self.depth += 1;
        let v = self.value_here();
        self.depth -= 1;
        v
    }

    fn value_here(&mut self) -> Result<Py, String> {
        match self.peek() {
            Some(q @ (b'\'' | b'"')) => {
                self.i += 1;
                let start = self.i;
                while self.i < self.s.len() && self.s[self.i] != q {
                    self.i += 1;
                }
                if self.i >= self.s.len() {
                    return Err("unterminated string".into());
                }
                let text = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
                self.i += 1;
                Ok(Py::Str(text))
            }
            Some(open @ (b'(' | b'[')) => {
                self.i += 1;
                let close = if open == b'(' { b')' } else { b']' };
                let mut items = Vec::new();
                loop {
                    if self.eat(close) {
                        return Ok(Py::Seq(items));
                    }
                    items.push(self.value()?);
                    if !self.eat(b',') && self.peek() != Some(close) {
                        return Err("expected `,` in sequence".into());
                    }
                }
            }
            Some(b'{') => {
                self.i += 1;
                let mut items = Vec::new();
                loop {
                    if self.eat(b'}') {
                        return Ok(Py::Dict(items));
                    }
                    let k = self.value()?;
                    if !self.eat(b':') {
                        return Err("expected `:` in dict".into());
                    }
                    let v = self.value()?;
                    items.push((k, v));
                    if !self.eat(b',') && self.peek() != Some(b'}') {
                        return Err("expected `,` in dict".into());
                    }
                }
            }
            Some(c) if c.is_ascii_digit() || c == b'-' => {
                let start = self.i;
                self.i += 1;
                while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
                    self.i += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
                let v = text.parse().map_err(|_| format!("bad integer `{text}`"))?;
                // Python 2 long suffix, as in `(10L,)`.
                if matches!(self.s.get(self.i), Some(b'L' | b'l')) {
                    self.i += 1;
                }
                Ok(Py::Int(v))
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.i;
                while self.i < self.s.len() && self.s[self.i].is_ascii_alphanumeric() {
                    self.i += 1;
                }
                match &self.s[start..self.i] {
                    b"True" => Ok(Py::Bool(true)),
                    b"False" => Ok(Py::Bool(false)),
                    b"None" => Ok(Py::None),
                    w => Err(format!("unexpected word `{}`", String::from_utf8_lossy(w))),
                }
            }
            Some(c) => Err(format!("unexpected character `{}`", c as char)),
            None => Err("unexpected end of header".into()),
        }
    }
}

/// The parsed `.npy` header.
struct Header {
    dtype: Dtype,
    shape: Vec<usize>,
}

impl Header {
    /// The number of elements, `None` when the dimensions multiply past `usize::MAX`.
    fn count(&self) -> Option<usize> {
        checked_product(&self.shape)
    }
}

fn checked_product(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// Reads and parses the `.npy` header from `r`; `what` names the file and member for errors.
fn read_header(r: &mut impl Read, path: &Path, what: &str) -> Result<Header, DataError> {
    let err = |m: String| DataError::format(path, format!("{what}: {m}"));
    let io = |e: std::io::Error| err(format!("cannot read the .npy header: {e}"));
    let mut pre = [0u8; 8];
    r.read_exact(&mut pre).map_err(io)?;
    if &pre[..6] != MAGIC {
        return Err(err("not a .npy array (bad magic)".into()));
    }
    let major = pre[6];
    let len = match major {
        1 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).map_err(io)?;
            usize::from(u16::from_le_bytes(b))
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b).map_err(io)?;
            u32::from_le_bytes(b) as usize
        }
        v => return Err(err(format!("unsupported .npy version {v}.{}", pre[7]))),
    };
    if len > 1 << 20 {
        return Err(err(format!("implausible .npy header length {len}")));
    }
    let mut text = vec![0u8; len];
    r.read_exact(&mut text).map_err(io)?;
    let dict = PyParser {
        s: &text,
        i: 0,
        depth: 0,
    }
    .value()
    .map_err(|m| err(format!("bad .npy header: {m}")))?;
    let Py::Dict(items) = dict else {
        return Err(err("bad .npy header: not a dict".into()));
    };
    let get = |key: &str| {
        items
            .iter()
            .find(|(k, _)| matches!(k, Py::Str(s) if s == key))
            .map(|(_, v)| v)
            .ok_or_else(|| err(format!("bad .npy header: no `{key}`")))
    };
    let descr = match get("descr")? {
        Py::Str(s) => s.clone(),
        other => {
            return Err(err(format!(
                "unsupported dtype {other:?} (structured arrays are not supported)"
            )))
        }
    };
    let dtype = Dtype::parse(&descr).ok_or_else(|| {
        err(format!(
            "unsupported dtype `{descr}` (expected an integer type such as <i8, <i4, <i2 or |u1)"
        ))
    })?;
    match get("fortran_order")? {
        Py::Bool(false) => {}
        Py::Bool(true) => return Err(err("Fortran-order arrays are not supported".into())),
        other => return Err(err(format!("bad fortran_order {other:?}"))),
    }
    let shape = match get("shape")? {
        Py::Seq(dims) => dims
            .iter()
            .map(|d| match d {
                Py::Int(v) if *v >= 0 => Ok(*v as usize),
                other => Err(err(format!("bad dimension {other:?} in shape"))),
            })
            .collect::<Result<Vec<_>, _>>()?,
        other => return Err(err(format!("bad shape {other:?}"))),
    };
    Ok(Header { dtype, shape })
}

/// Opens an `.npz` archive.
fn open_npz(path: &Path) -> Result<zip::ZipArchive<BufReader<File>>, DataError> {
    let f = File::open(path).map_err(|e| DataError::io(path, e))?;
    zip::ZipArchive::new(BufReader::new(f)).map_err(|source| DataError::Zip {
        path: path.to_path_buf(),
        source,
    })
}

/// The member holding array `name` (`name.npy`, or `name` itself).
fn member_name(
    archive: &zip::ZipArchive<BufReader<File>>,
    path: &Path,
    name: &str,
) -> Result<String, DataError> {
    let with_ext = format!("{name}.npy");
    for candidate in [with_ext.as_str(), name] {
        if archive.index_for_name(candidate).is_some() {
            return Ok(candidate.to_string());
        }
    }
    let members: Vec<&str> = archive.file_names().collect();
    Err(DataError::format(
        path,
        format!(
            "no array `{name}` in the archive (members: {})",
            members.join(", ")
        ),
    ))
}

/// Reads the payload of a member after its header: exactly `bytes` bytes appended to `dst`, then
/// checks nothing follows (which also lets the zip reader verify the CRC).
///
/// `dst` grows with the data as it arrives rather than to `bytes` up front: the zip's size fields
/// can be as corrupt as the header, so only bytes the member really holds are allocated for.
fn read_payload(
    r: &mut impl Read,
    path: &Path,
    what: &str,
    bytes: usize,
    dst: &mut Vec<u8>,
) -> Result<(), DataError> {
    let truncated = |detail: String| {
        DataError::format(
            path,
            format!("{what}: truncated or corrupt array data ({bytes} bytes expected): {detail}"),
        )
    };
    let read = r
        .take(bytes as u64)
        .read_to_end(dst)
        .map_err(|e| truncated(e.to_string()))?;
    if read != bytes {
        return Err(truncated(format!("{read} found")));
    }
    let extra = std::io::copy(r, &mut std::io::sink())
        .map_err(|e| DataError::format(path, format!("{what}: corrupt array data: {e}")))?;
    if extra != 0 {
        return Err(DataError::format(
            path,
            format!("{what}: {extra} bytes after the array data its shape describes"),
        ));
    }
    Ok(())
}

/// Reads array `name` of an open archive; `u8` payloads are appended to `u8_dst` when given
/// (to avoid copying large image arrays), other types are returned.
fn read_member(
    archive: &mut zip::ZipArchive<BufReader<File>>,
    path: &Path,
    name: &str,
    u8_dst: Option<&mut Vec<u8>>,
) -> Result<NpyArray, DataError> {
    let member = member_name(archive, path, name)?;
    let what = format!("member `{member}`");
    let mut file = archive.by_name(&member).map_err(|source| DataError::Zip {
        path: path.to_path_buf(),
        source,
    })?;
    let header = read_header(&mut file, path, &what)?;
    let bytes = header
        .count()
        .and_then(|count| count.checked_mul(header.dtype.size))
        .ok_or_else(|| DataError::format(path, format!("{what}: shape too large")))?;
    // Check against the member's size first, for a clear message. The zip's sizes can be corrupt
    // too, which is why `read_payload` allocates only for data that arrives.
    if bytes as u64 > file.size() {
        return Err(DataError::format(
            path,
            format!(
                "{what}: truncated: shape {:?} needs {bytes} bytes but the member holds {}",
                header.shape,
                file.size()
            ),
        ));
    }
    let data = match u8_dst {
        Some(dst) if header.dtype.is_u8() => {
            read_payload(&mut file, path, &what, bytes, dst)?;
            NpyData::U8(Vec::new())
        }
        _ => {
            let mut raw = Vec::new();
            read_payload(&mut file, path, &what, bytes, &mut raw)?;
            if header.dtype.is_u8() {
                NpyData::U8(raw)
            } else {
                let d = header.dtype;
                NpyData::Int(raw.chunks_exact(d.size).map(|b| d.decode(b)).collect())
            }
        }
    };
    Ok(NpyArray {
        shape: header.shape,
        data,
    })
}

/// Reads array `name` (member `name.npy` or `name`) from the `.npz` archive at `path`.
///
/// Members may be stored or deflated. Only C-order integer/boolean arrays are supported.
pub fn read_npz_array(path: &Path, name: &str) -> Result<NpyArray, DataError> {
    let mut archive = open_npz(path)?;
    read_member(&mut archive, path, name, None)
}

/// Pixels per ImageNet32 image.
const PIXELS: usize = 3 * 32 * 32;
/// ImageNet classes.
const CLASSES: usize = 1000;

/// Reads and validates the `labels` array (values 1..=1000) of one file, shifted to 0..=999.
fn read_labels(
    archive: &mut zip::ZipArchive<BufReader<File>>,
    path: &Path,
) -> Result<Vec<u16>, DataError> {
    let arr = read_member(archive, path, "labels", None)?;
    let values: Vec<i64> = match arr.data {
        NpyData::U8(v) => v.into_iter().map(i64::from).collect(),
        NpyData::Int(v) => v,
    };
    if arr.shape.len() > 1 && arr.shape[1..].iter().any(|&d| d != 1) {
        return Err(DataError::format(
            path,
            format!("`labels` has shape {:?}, expected [N]", arr.shape),
        ));
    }
    values
        .iter()
        .enumerate()
        .map(|(index, &l)| stored_label(path, index, l, 1, CLASSES as i64))
        .collect()
}

/// Appends the `data` array (N x 3072 `u8`) of one file to `images`.
fn read_images(
    archive: &mut zip::ZipArchive<BufReader<File>>,
    path: &Path,
    n: usize,
    images: &mut Vec<u8>,
) -> Result<(), DataError> {
    let start = images.len();
    let arr = match read_member(archive, path, "data", Some(images)) {
        Ok(a) => a,
        Err(e) => {
            images.truncate(start);
            return Err(e);
        }
    };
    let fail = |m: String| Err(DataError::format(path, m));
    if !matches!(arr.data, NpyData::U8(ref v) if v.is_empty()) {
        return fail("`data` must be uint8 (|u1)".into());
    }
    let per_row = arr.shape.get(1..).and_then(checked_product);
    if arr.shape.first() != Some(&n) || per_row != Some(PIXELS) {
        return fail(format!(
            "`data` has shape {:?}, expected [{n}, {PIXELS}] to match {n} labels",
            arr.shape
        ));
    }
    Ok(())
}

/// Reads downsampled ImageNet 32x32 (npz version) from `dir`: `train_data_batch_1.npz` ..
/// `train_data_batch_10.npz` (concatenated in order) and `val_data.npz`.
pub fn load_imagenet32(dir: &Path) -> Result<(Dataset, Dataset), DataError> {
    let kind = DatasetKind::ImageNet32;
    kind.require_dir(dir)?;
    let train_files: Vec<String> = (1..=10)
        .map(|i| format!("train_data_batch_{i}.npz"))
        .collect();
    let test_files = ["val_data.npz".to_string()];
    // Check every file exists before spending minutes reading the training set.
    if let Some(p) = train_files
        .iter()
        .chain(&test_files)
        .map(|f| dir.join(f))
        .find(|p| !p.is_file())
    {
        return Err(kind.not_found(p, None));
    }
    let train = read_files(dir, &train_files)?;
    let test = read_files(dir, &test_files)?;
    Ok((train, test))
}

/// Reads and concatenates several npz files; labels first (to size the image buffer exactly,
/// since the training images alone take 3.9 GB), then images.
fn read_files(dir: &Path, files: &[String]) -> Result<Dataset, DataError> {
    let paths: Vec<_> = files.iter().map(|f| dir.join(f)).collect();
    let mut labels = Vec::new();
    let mut counts = Vec::new();
    for p in &paths {
        let l = read_labels(&mut open_npz(p)?, p)?;
        counts.push(l.len());
        labels.extend(l);
    }
    let mut images = Vec::new();
    images
        .try_reserve_exact(labels.len() * PIXELS)
        .map_err(|e| {
            DataError::Invalid(format!(
                "cannot allocate {} bytes for the images of {}: {e}",
                labels.len() * PIXELS,
                dir.display()
            ))
        })?;
    for (p, &n) in paths.iter().zip(&counts) {
        read_images(&mut open_npz(p)?, p, n, &mut images)?;
    }
    Dataset::new(images, labels, (3, 32, 32), CLASSES)
}
