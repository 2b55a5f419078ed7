//! The hand-over from groupwise's C++ kernels (`batch_norm.cpp`, `conv.cpp`): each C entry point
//! returns a new tensor, or null and a malloc'd error message.

use std::ffi::{c_char, CStr};

use tch::Tensor;
use torch_sys::C_tensor;

/// The tensor that `call` (a kernel's entry point, given where to put its error) returns. A failure
/// panics with `what` and the kernel's message, as a failing libtorch op does in tch.
// Reading the kernel's error and taking ownership of its tensor is `unsafe`.
#[allow(unsafe_code)]
pub(super) fn tensor(what: &str, call: impl FnOnce(*mut *mut c_char) -> *mut C_tensor) -> Tensor {
    let mut error: *mut c_char = std::ptr::null_mut();
    let out = call(&mut error);
    // SAFETY: the entry points return either a new tensor that the caller owns (tch frees it on
    // drop) or null with a malloc'd, NUL-terminated message in `error`.
    unsafe {
        if out.is_null() {
            let message = CStr::from_ptr(error).to_string_lossy().into_owned();
            libc::free(error.cast());
            panic!("{what}: {message}");
        }
        Tensor::from_ptr(out)
    }
}
