//! Checkpoints: every node's tensors in one safetensors file, written atomically.
//!
//! Tensor names: `m{k}.g{g}.<param>` for unit (k, g) (and for group g's column of the final module,
//! k = number of boundaries), `head.<param>` for the head, where `<param>` is the layer path of
//! `model::layers` (`s2.b1.conv1.weight`, `aux.fc2.bias`, `stem.bn.running_mean`, ...);
//! `momentum.<name>` for the SGD momentum of parameter `<name>`; `train.epoch` and `train.step` (int64
//! scalars) for where training stands: `train.epoch` epochs are complete and `train.step` batches of the
//! next epoch are done.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::{Device, Tensor};
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

/// Writes the network and progress to `path` atomically (a temporary file renamed into place).
pub fn save(net: &Network, progress: Progress, path: &Path) -> Result<(), CheckpointError> {
    let mut named: Vec<(String, Tensor)> = net
        .named_tensors()
        .into_iter()
        .map(|(n, t)| (n, t.to_device(Device::Cpu)))
        .collect();
    named.push(("train.epoch".into(), Tensor::from(progress.epoch as i64)));
    named.push(("train.step".into(), Tensor::from(progress.step as i64)));
    write_atomic(&named, path)
}

/// Writes named tensors to `path` through a temporary file and a rename.
pub fn write_atomic(named: &[(String, Tensor)], path: &Path) -> Result<(), CheckpointError> {
    let err = |reason: String| CheckpointError::Write {
        path: path.to_path_buf(),
        reason,
    };
    let tmp = path.with_extension("safetensors.tmp");
    let refs: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
    Tensor::write_safetensors(&refs, &tmp).map_err(|e| err(e.to_string()))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| err(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))
}

/// Reads every tensor of a safetensors file.
pub fn read(path: &Path) -> Result<BTreeMap<String, Tensor>, CheckpointError> {
    if !path.is_file() {
        return Err(CheckpointError::Unreadable {
            path: path.to_path_buf(),
            reason: "no such file".into(),
        });
    }
    let tensors = Tensor::read_safetensors(path).map_err(|e| CheckpointError::Unreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(tensors.into_iter().collect())
}

/// Copies the file's tensors into the network. Parameters and BN statistics must all be present;
/// momentum buffers are loaded when `with_momentum` (resume) and ignored otherwise (`--init-from`).
/// Returns the saved progress (zero when the file has none).
pub fn load(
    net: &mut Network,
    path: &Path,
    with_momentum: bool,
) -> Result<Progress, CheckpointError> {
    let tensors = read(path)?;
    assign_from(net, &tensors, with_momentum, true, path)?;
    let scalar = |name: &str| tensors.get(name).map(|t| t.int64_value(&[]) as usize);
    Ok(Progress {
        epoch: scalar("train.epoch").unwrap_or(0),
        step: scalar("train.step").unwrap_or(0),
    })
}

/// Copies named tensors (checkpoint names) into the network: every node when `all` (a missing name is
/// an error), else only the nodes whose tensors are present (the state one MPI rank sends).
pub fn assign(
    net: &mut Network,
    tensors: &BTreeMap<String, Tensor>,
    with_momentum: bool,
    all: bool,
) -> Result<(), CheckpointError> {
    assign_from(net, tensors, with_momentum, all, Path::new("(message)"))
}

fn assign_from(
    net: &mut Network,
    tensors: &BTreeMap<String, Tensor>,
    with_momentum: bool,
    all: bool,
    path: &Path,
) -> Result<(), CheckpointError> {
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
        if !all && !present {
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
            tch::no_grad(|| var.copy_(src));
        }
        if with_momentum {
            let prefix = format!("momentum.{}", params.prefix);
            let device = params.vs.device();
            let buffers = tensors
                .iter()
                .filter_map(|(n, t)| {
                    let rest = n.strip_prefix(&prefix)?;
                    let var = vars.get(rest)?;
                    Some((rest.to_string(), t.to_kind(var.kind()).to_device(device)))
                })
                .collect();
            params.opt.set_buffers(buffers);
        }
    }
    Ok(())
}

/// Reads only the progress scalars of a checkpoint.
pub fn read_progress(path: &Path) -> Result<Progress, CheckpointError> {
    let tensors = read(path)?;
    let scalar = |name: &str| tensors.get(name).map(|t| t.int64_value(&[]) as usize);
    Ok(Progress {
        epoch: scalar("train.epoch").unwrap_or(0),
        step: scalar("train.step").unwrap_or(0),
    })
}
