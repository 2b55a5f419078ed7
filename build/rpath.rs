//! Shared build script: bake libtorch's library directory into the rpath of every binary, test and
//! example of the package, so the user never has to export LD_LIBRARY_PATH.
//!
//! torch-sys (`links = "tch"`) publishes the directory it linked against as `DEP_TCH_LIBTORCH_LIB`,
//! which reaches this script because the package depends on torch-sys directly.
/// Emits the rpath link arguments.
pub fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        // Keep libtorch_cpu's own RUNPATH lookups working for the CUDA runtime it names.
        println!("cargo:rustc-link-arg=-Wl,--disable-new-dtags");
    }
}
