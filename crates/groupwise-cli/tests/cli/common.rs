//! Helpers shared by the integration tests: the built binary, scratch directories, CSV files and
//! checkpoint comparison.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use tch::{Kind, Tensor};
use tempfile::TempDir;

/// The built `groupwise`.
pub const BIN: &str = env!("CARGO_BIN_EXE_groupwise");

/// The built `groupwise` as a command.
pub fn groupwise() -> Command {
    Command::new(BIN)
}

/// A new empty directory, removed with everything in it when dropped.
pub fn scratch(name: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("gw-{name}-"))
        .tempdir()
        .expect("scratch directory")
}

/// Runs `cmd` to its end: whether it succeeded, its stdout and its stderr.
pub fn output(cmd: &mut Command) -> (bool, String, String) {
    let out: Output = cmd.output().expect("run groupwise");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A CSV file's header and rows, read with the csv crate; every row has the header's length.
pub fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader =
        csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    let rows: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    for row in &rows {
        assert_eq!(row.len(), header.len(), "{}: {row:?}", path.display());
    }
    (header, rows)
}

/// The cell of a CSV file in the row whose first field is `first` and the column named `column`.
pub fn cell(path: &Path, first: &str, column: &str) -> String {
    let (header, rows) = read_csv(path);
    let i = header
        .iter()
        .position(|h| h == column)
        .unwrap_or_else(|| panic!("no column {column} in {}", path.display()));
    let row = rows
        .iter()
        .find(|r| r[0] == first)
        .unwrap_or_else(|| panic!("no row {first} in {}", path.display()));
    row[i].clone()
}

/// Largest relative difference over every tensor of two checkpoint files, which must hold the same
/// names (relative to the larger magnitude of the two, at least 1e-6).
pub fn max_rel_diff(a: &Path, b: &Path) -> f64 {
    let read = |p: &Path| -> BTreeMap<String, Tensor> {
        Tensor::read_safetensors(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .into_iter()
            .collect()
    };
    let (a, b) = (read(a), read(b));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "checkpoint names differ"
    );
    a.iter()
        .map(|(name, x)| {
            let x = x.to_kind(Kind::Double);
            let y = b[name].to_kind(Kind::Double);
            let scale = x
                .abs()
                .max()
                .double_value(&[])
                .max(y.abs().max().double_value(&[]))
                .max(1e-6);
            (&x - &y).abs().max().double_value(&[]) / scale
        })
        .fold(0.0, f64::max)
}
