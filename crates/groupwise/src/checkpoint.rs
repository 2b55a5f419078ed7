//! Checkpoints: every node's tensors in one safetensors file, written atomically.
//!
//! Tensor names: `m{k}.g{g}.<param>` for unit (k, g) (and for group g's column of the final module,
//! k = number of boundaries), `head.<param>` for the head, where `<param>` is the layer path of
//! `model::layers` (`s2.b1.conv1.weight`, `aux.fc2.bias`, `stem.bn.running_mean`, ...);
//! `momentum.<name>` for the SGD momentum of parameter `<name>`; `train.epoch` and `train.step` (int64
//! scalars) for where training stands: `train.epoch` epochs are complete and `train.step` batches of the
//! next epoch are done.
//!
//! The bytes are safetensors ([`to_bytes`], [`from_bytes`]): one format for checkpoint files and for
//! the state MPI ranks exchange.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, View};
use tch::{Device, Kind, Tensor};
use thiserror::Error;

use crate::local::Network;

/// A checkpoint that cannot be read or does not fit the network.
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// Missing, unreadable, truncated or not safetensors.
    #[error("cannot read checkpoint {path}: {reason}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What libtorch or the OS said.
        reason: String,
    },
    /// A tensor the network needs is absent.
    #[error(
        "checkpoint {path} has no tensor '{name}': it was written for another plan or architecture"
    )]
    Missing {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        name: String,
    },
    /// A tensor of the wrong shape.
    #[error(
        "checkpoint {path}: tensor '{name}' has shape {found:?}, the network needs {expected:?}"
    )]
    Shape {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// Shape in the file.
        found: Vec<i64>,
        /// Shape in the network.
        expected: Vec<i64>,
    },
    /// A floating-point tensor holding NaN or infinite values: the run that wrote it had diverged
    /// (or the file was edited), and nothing trained from or evaluated with it would mean anything.
    #[error("checkpoint {path}: tensor '{name}' holds {what} ({count} of {numel} values)")]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// `NaN` or `infinite values` (NaN when it holds both).
        what: &'static str,
        /// How many of its values are such.
        count: i64,
        /// Its values.
        numel: i64,
    },
    /// Writing failed.
    #[error("cannot write checkpoint {path}: {reason}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Where training stands, saved beside the weights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Complete epochs.
    pub epoch: usize,
    /// Batches done of the next epoch.
    pub step: usize,
}

impl Progress {
    /// Names of the progress scalars beside the weights.
    const EPOCH: &'static str = "train.epoch";
    const STEP: &'static str = "train.step";

    /// As the two int64 scalars `train.epoch` and `train.step`.
    pub fn to_named(self) -> [(String, Tensor); 2] {
        [
            (Self::EPOCH.into(), Tensor::from(self.epoch as i64)),
            (Self::STEP.into(), Tensor::from(self.step as i64)),
        ]
    }

    /// Checks that the progress scalars among `tensors` are as [`Progress::to_named`] writes them
    /// (non-negative int64 scalars), so that [`Progress::from_named`] can read them.
    fn check(tensors: &BTreeMap<String, Tensor>) -> Result<(), String> {
        for name in [Self::EPOCH, Self::STEP] {
            if let Some(t) = tensors.get(name) {
                if t.kind() != Kind::Int64 || t.dim() != 0 || t.int64_value(&[]) < 0 {
                    return Err(format!(
                        "{name} is not a non-negative int64 scalar ({:?} of shape {:?})",
                        t.kind(),
                        t.size()
                    ));
                }
            }
        }
        Ok(())
    }

    /// From named tensors (zero where a scalar is absent: a file written by `--init-from` tools).
    pub fn from_named(tensors: &BTreeMap<String, Tensor>) -> Progress {
        let scalar = |name: &str| {
            tensors
                .get(name)
                .map_or(0, |t| t.int64_value(&[]).max(0) as usize)
        };
        Progress {
            epoch: scalar(Self::EPOCH),
            step: scalar(Self::STEP),
        }
    }
}

/// The network's tensors (on the CPU) and `progress`, named as in checkpoints.
pub fn named_state(net: &Network, progress: Progress) -> Vec<(String, Tensor)> {
    net.named_tensors()
        .into_iter()
        .map(|(n, t)| (n, t.to_device(Device::Cpu)))
        .chain(progress.to_named())
        .collect()
}

/// Writes the network and progress to `path` atomically (a temporary file renamed into place).
pub fn save(net: &Network, progress: Progress, path: &Path) -> Result<(), CheckpointError> {
    write_atomic(&named_state(net, progress), path)
}

/// Writes named tensors to `path` atomically.
pub fn write_atomic(named: &[(String, Tensor)], path: &Path) -> Result<(), CheckpointError> {
    let err = |reason: String| CheckpointError::Write {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = to_bytes(named).map_err(err)?;
    crate::atomic::write(path, &bytes).map_err(|e| err(e.to_string()))
}

/// A tensor as safetensors sees it (contiguous CPU bytes).
struct Bytes {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Bytes {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Named tensors as safetensors bytes (any device; float32/64, bf16, f16 and integer kinds).
pub fn to_bytes(named: &[(String, Tensor)]) -> Result<Vec<u8>, String> {
    let views = named
        .iter()
        .map(|(name, t)| {
            let t = t.to_device(Device::Cpu).contiguous();
            let dtype = Dtype::try_from(t.kind()).map_err(|e| format!("{name}: {e}"))?;
            let numel = t.numel();
            let mut data = vec![0u8; numel * t.kind().elt_size_in_bytes()];
            t.f_copy_data_u8(&mut data, numel)
                .map_err(|e| format!("{name}: {e}"))?;
            let shape = t.size().iter().map(|&d| d as usize).collect();
            Ok((name.clone(), Bytes { dtype, shape, data }))
        })
        .collect::<Result<Vec<_>, String>>()?;
    safetensors::tensor::serialize(views.iter().map(|(n, b)| (n.as_str(), b)), &None)
        .map_err(|e| e.to_string())
}

/// Refuses a tensor whose data offsets lie past the end of `bytes`. safetensors 0.3 adds the last
/// end offset to the header length unchecked, which overflows (a panic in debug builds) for an
/// offset near `usize::MAX`; everything else it checks itself, so anything this cannot parse is
/// left to it.
fn check_offsets(bytes: &[u8]) -> Result<(), String> {
    let Some(len) = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
    else {
        return Ok(());
    };
    let Some(header) = usize::try_from(len)
        .ok()
        .and_then(|len| bytes.get(8..len.checked_add(8)?))
    else {
        return Ok(());
    };
    let Ok(serde_json::Value::Object(entries)) = serde_json::from_slice(header) else {
        return Ok(());
    };
    let data = (bytes.len() - 8 - header.len()) as u64;
    for (name, info) in &entries {
        let offsets = info.get("data_offsets").and_then(|o| o.as_array());
        if offsets.is_some_and(|o| o.iter().any(|o| o.as_u64().is_some_and(|o| o > data))) {
            return Err(format!(
                "not safetensors: tensor '{name}' has data offsets past the end of its {data} bytes of data"
            ));
        }
    }
    Ok(())
}

/// Named tensors from safetensors bytes; an error says what is wrong with them.
pub fn from_bytes(bytes: &[u8]) -> Result<BTreeMap<String, Tensor>, String> {
    check_offsets(bytes)?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| format!("not safetensors: {e}"))?;
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let kind = Kind::try_from(view.dtype()).map_err(|e| format!("{name}: {e}"))?;
            // safetensors checks the shape against the data in `usize`; libtorch takes `i64`, and
            // with a zero dimension the others can be anything.
            let shape = view
                .shape()
                .iter()
                .map(|&d| i64::try_from(d).ok())
                .collect::<Option<Vec<i64>>>()
                .filter(|s| {
                    s.iter()
                        .filter(|&&d| d != 0)
                        .try_fold(1i64, |n, &d| n.checked_mul(d))
                        .is_some()
                })
                .ok_or_else(|| format!("{name}: shape {:?} is too large", view.shape()))?;
            let t = Tensor::f_from_data_size(view.data(), &shape, kind)
                .map_err(|e| format!("{name}: {e}"))?;
            Ok((name, t))
        })
        .collect::<Result<_, String>>()?;
    Progress::check(&tensors)?;
    Ok(tensors)
}

/// Reads every tensor of a safetensors file.
pub fn read(path: &Path) -> Result<BTreeMap<String, Tensor>, CheckpointError> {
    let unreadable = |reason: String| CheckpointError::Unreadable {
        path: path.to_path_buf(),
        reason,
    };
    if !path.is_file() {
        return Err(unreadable("no such file".into()));
    }
    let bytes = std::fs::read(path).map_err(|e| unreadable(e.to_string()))?;
    from_bytes(&bytes).map_err(unreadable)
}

/// What a load takes from a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restore {
    /// Parameters and BN statistics (`--init-from`, `eval`); momentum buffers are ignored.
    Weights,
    /// Weights and momentum: the state a run stands in (`--resume`, MPI state).
    State,
}

/// Which nodes an assignment covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coverage {
    /// Every node: a missing tensor is an error.
    All,
    /// Only the nodes whose tensors are present (the state one MPI rank sends).
    Present,
}

/// Copies the file's tensors into every node of the network (parameters and BN statistics must all
/// be present). Returns the saved progress (zero when the file has none).
///
/// Every tensor it copies (parameters, BN statistics, and with [`Restore::State`] momentum buffers)
/// must be finite: a NaN or infinite value is [`CheckpointError::NonFinite`] naming the tensor.
pub fn load(net: &mut Network, path: &Path, restore: Restore) -> Result<Progress, CheckpointError> {
    let tensors = read(path)?;
    assign_from(net, &tensors, restore, Coverage::All, Some(path))?;
    Ok(Progress::from_named(&tensors))
}

/// Copies named tensors (checkpoint names) into the nodes `coverage` says, as they are: this is
/// state moving between the ranks of a run, which may be diverging (the trainer's loss check
/// judges that, not the transport); files go through [`load`], which refuses non-finite values.
pub fn assign(
    net: &mut Network,
    tensors: &BTreeMap<String, Tensor>,
    restore: Restore,
    coverage: Coverage,
) -> Result<(), CheckpointError> {
    assign_from(net, tensors, restore, coverage, None)
}

/// Refuses a floating-point tensor that holds NaN or infinite values.
fn check_finite(t: &Tensor, name: &str, path: &Path) -> Result<(), CheckpointError> {
    if !t.is_floating_point() || t.numel() == 0 || t.isfinite().all().int64_value(&[]) != 0 {
        return Ok(());
    }
    let count = |mask: Tensor| mask.sum(Kind::Int64).int64_value(&[]);
    let nan = count(t.isnan());
    let (what, count) = if nan > 0 {
        ("NaN", nan)
    } else {
        ("infinite values", count(t.isinf()))
    };
    Err(CheckpointError::NonFinite {
        path: path.to_path_buf(),
        name: name.to_string(),
        what,
        count,
        numel: t.numel() as i64,
    })
}

/// [`load`] (`file` is the checkpoint, whose values must be finite) or [`assign`] (`None`: a
/// message between ranks).
fn assign_from(
    net: &mut Network,
    tensors: &BTreeMap<String, Tensor>,
    restore: Restore,
    coverage: Coverage,
    file: Option<&Path>,
) -> Result<(), CheckpointError> {
    let path = file.unwrap_or(Path::new("(message)"));
    let finite = |t: &Tensor, name: &str| match file {
        Some(path) => check_finite(t, name, path),
        None => Ok(()),
    };
    let get = |name: &str| -> Result<&Tensor, CheckpointError> {
        tensors.get(name).ok_or_else(|| CheckpointError::Missing {
            path: path.to_path_buf(),
            name: name.to_string(),
        })
    };
    for params in net.params_mut() {
        let vars = params.vs.variables();
        let present = vars
            .keys()
            .any(|n| tensors.contains_key(&format!("{}{n}", params.prefix)));
        if coverage == Coverage::Present && !present {
            continue;
        }
        for (name, mut var) in vars.iter().map(|(n, v)| (n.clone(), v.shallow_clone())) {
            let full = format!("{}{name}", params.prefix);
            let src = get(&full)?;
            if src.size() != var.size() {
                return Err(CheckpointError::Shape {
                    path: path.to_path_buf(),
                    name: full,
                    found: src.size(),
                    expected: var.size(),
                });
            }
            // Checked as the network holds it: a float64 value may overflow float32.
            tch::no_grad(|| var.copy_(src));
            finite(&var, &full)?;
        }
        if restore == Restore::State {
            let prefix = format!("momentum.{}", params.prefix);
            let device = params.vs.device();
            let buffers = tensors
                .iter()
                .filter_map(|(n, t)| {
                    let rest = n.strip_prefix(&prefix)?;
                    let var = vars.get(rest)?;
                    if t.size() != var.size() {
                        return Some(Err(CheckpointError::Shape {
                            path: path.to_path_buf(),
                            name: n.clone(),
                            found: t.size(),
                            expected: var.size(),
                        }));
                    }
                    let buffer = t.to_kind(var.kind());
                    if let Err(e) = finite(&buffer, n) {
                        return Some(Err(e));
                    }
                    Some(Ok((rest.to_string(), buffer.to_device(device))))
                })
                .collect::<Result<_, _>>()?;
            params.opt.set_buffers(buffers);
        }
    }
    Ok(())
}

/// Reads only the progress scalars of a checkpoint.
pub fn read_progress(path: &Path) -> Result<Progress, CheckpointError> {
    Ok(Progress::from_named(&read(path)?))
}
