//! Device selection. Rust links with `--as-needed`, which drops `libtorch_cuda.so` from the binary
//! (nothing references it by symbol), so CUDA would look absent: for `--device cuda` the library is
//! loaded at run time with `RTLD_GLOBAL` before libtorch is asked about GPUs.

use serde::{Deserialize, Serialize};
use tch::Device;
use thiserror::Error;

/// Where to train.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceChoice {
    /// The CPU (always available).
    #[default]
    Cpu,
    /// The first CUDA GPU libtorch sees.
    Cuda,
}

/// CUDA was asked for and cannot be used.
#[derive(Debug, Error)]
#[error("--device cuda: {0}")]
pub struct DeviceError(String);

/// Sets the intra-op threads libtorch uses for work started from the calling thread.
///
/// libtorch keeps the count per thread but initialises a thread lazily, at its first parallel op,
/// from the count last set by *any* thread; a plain `tch::set_num_threads` in a new thread is thus
/// overwritten when another thread sets a different count before this one's first op (two runs
/// in one process, or a worker started while the trainer sets `--threads`). Initialising first
/// makes the count stick, so the kernels' reduction order, and with it every bit of the result,
/// depends only on this thread's setting.
pub fn set_intra_op_threads(threads: usize) {
    tch::get_num_threads();
    tch::set_num_threads(threads.max(1) as i32);
}

/// Resolves the choice to a libtorch device, loading libtorch's CUDA library when needed.
pub fn resolve(choice: DeviceChoice) -> Result<Device, DeviceError> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda => {
            load_cuda_library()?;
            if tch::Cuda::is_available() {
                Ok(Device::Cuda(0))
            } else {
                Err(DeviceError(
                    "libtorch_cuda loaded but no GPU is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)"
                        .into(),
                ))
            }
        }
    }
}

// libtorch's CUDA library has no Rust binding to load it: dlopen is the only way, hence `unsafe`.
#[allow(unsafe_code)]
fn load_cuda_library() -> Result<(), DeviceError> {
    let name = c"libtorch_cuda.so";
    // SAFETY: dlopen with a valid NUL-terminated name; the handle is deliberately never closed so the
    // library stays loaded for the life of the process.
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if handle.is_null() {
        // SAFETY: dlerror returns a thread-local C string or null.
        let msg = unsafe {
            let e = libc::dlerror();
            if e.is_null() {
                "unknown error".to_string()
            } else {
                std::ffi::CStr::from_ptr(e).to_string_lossy().into_owned()
            }
        };
        return Err(DeviceError(format!(
            "cannot load libtorch_cuda.so ({msg}); install the CUDA build with GROUPWISE_TORCH=full scripts/setup-libtorch.sh"
        )));
    }
    Ok(())
}
