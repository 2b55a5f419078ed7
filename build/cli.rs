//! Build script of the `groupwise` binary: the shared rpath step, then every preset under `configs/`
//! embedded into the binary, so `--preset NAME` works wherever the binary is installed.

#[path = "rpath.rs"]
mod rpath;

use std::path::{Path, PathBuf};

fn collect(dir: &Path, root: &Path, out: &mut Vec<(String, PathBuf)>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("readable directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            let rel = path.strip_prefix(root).expect("under configs/");
            let name = rel.with_extension("").to_string_lossy().replace('\\', "/");
            out.push((name, path));
        }
    }
}

fn main() {
    rpath::main();
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest.join("../../configs");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut presets = Vec::new();
    collect(&root, &root, &mut presets);
    let mut code = String::from("/// Every preset under `configs/`: (name, TOML text).\n");
    code.push_str("pub const BUILTIN: &[(&str, &str)] = &[\n");
    for (name, path) in &presets {
        println!("cargo:rerun-if-changed={}", path.display());
        code.push_str(&format!(
            "    ({name:?}, include_str!({:?})),\n",
            path.display().to_string()
        ));
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("presets.rs");
    std::fs::write(out, code).expect("write presets.rs");
}
