//! Integration tests of the `groupwise` command: one binary (one link against libtorch) with a
//! module per area, sharing `common`'s helpers.

mod bench;
mod common;
mod mpi;
mod regression;
mod report;
mod run_dir;
mod simulate;
mod sweep;
