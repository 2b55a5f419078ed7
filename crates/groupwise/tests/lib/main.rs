//! The library's integration tests, as one test binary: each binary links libtorch, so one instead of
//! one per file saves the link time and disk of the others. Each module is one area of the library;
//! fixtures are read from `tests/fixtures/` under `CARGO_MANIFEST_DIR`. The modules share one
//! process, so what they share (scratch directories, the synthetic run, libtorch's global generator)
//! lives in `common`.

mod common;
mod corruption;
mod data_readers;
mod golden;
mod nonfinite;
mod parallel;
mod plan_cost;
mod resume;
mod train_smoke;
