//! Build script of the library: the shared rpath step, then groupwise's CPU kernels (libtorch autograd
//! functions: `src/model/batch_norm.cpp`, see `model/batch_norm.rs`; `src/model/conv.cpp`, see
//! `model/conv.rs`) compiled against the libtorch that torch-sys links, with its C++ ABI.

#[path = "rpath.rs"]
mod rpath;

use std::path::PathBuf;

fn main() {
    rpath::main();
    let sources = ["src/model/batch_norm.cpp", "src/model/conv.cpp"];
    for file in sources.iter().chain(&["src/model/kernels.h"]) {
        println!("cargo:rerun-if-changed={file}");
    }
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .expect("torch-sys publishes the libtorch it links (DEP_TCH_LIBTORCH_LIB)");
    let root = PathBuf::from(lib)
        .parent()
        .expect("libtorch's lib directory has a parent")
        .to_path_buf();
    // torch-sys's default, which its own C++ is built with.
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .files(sources)
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        // GCC vectors wider than the default target pass by another ABI: only inside this file.
        .flag("-Wno-psabi")
        // ATen's parallel_for is OpenMP inlined into the caller: without it the kernels run on one
        // thread whatever the intra-op thread count.
        .flag("-fopenmp")
        // The kernel's loops are written to be vectorised: optimised in every profile.
        .opt_level(3)
        .warnings(false)
        .compile("groupwise_kernels");
    // The OpenMP runtime that libtorch loads (its own libgomp.so.1, found through the rpath at run
    // time); linked by name so the kernels' OpenMP calls resolve to it.
    println!("cargo:rustc-link-lib=dylib=gomp");
}
