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

/// Makes glibc's allocator keep the memory a training step frees for the next step instead of
/// handing it back to the kernel (when `GROUPWISE_MALLOC` is not `system` and the user has set no
/// `MALLOC_*` or `GLIBC_TUNABLES` malloc setting of their own); call it once, before the first
/// tensor and before other threads start. Returns whether it did.
///
/// By default glibc serves a tensor of more than its (adaptive) mmap threshold with a fresh `mmap`
/// and returns it with `munmap`, trims the top of its heap when it holds more than twice that free,
/// and gives each thread an arena of 64 MiB heaps that it unmaps once free; each step then faults in
/// and zeroes its activations' pages again. With the threshold at glibc's largest (32 MiB), no
/// trimming and one arena for every thread, freed blocks are reused (`scripts/bench_malloc.sh`,
/// ResNet-32, 20-step runs on 2 cores: on the sequential path 4x less kernel time and 0.76-0.97x the
/// step time; on worker threads about half the kernel time, the step within the runs' noise). The
/// price: the process keeps its peak memory until it exits. A no-op on other C libraries.
// glibc's allocator has no Rust binding: mallopt is the only way, hence `unsafe`.
#[allow(unsafe_code)]
pub fn keep_freed_memory() -> bool {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let theirs = var("GLIBC_TUNABLES").contains("glibc.malloc.")
        || std::env::vars_os().any(|(k, _)| k.to_string_lossy().starts_with("MALLOC_"));
    if var("GROUPWISE_MALLOC") == "system" || theirs {
        return false;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets allocator parameters; it is called before other threads exist.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
                && libc::mallopt(libc::M_ARENA_MAX, 1) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
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
