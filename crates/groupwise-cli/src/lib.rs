//! The `groupwise` command as a library: flags, their resolution into a run's config, and one
//! module per subcommand. `src/main.rs` parses the flags and dispatches; tests call the same code
//! in-process.
//!
//! Dependencies point one way, and no two modules import each other: [`args`] (raw flags) <-
//! [`config`] (flags -> validated `RunConfig` and runtime) <- [`cmd`] (train, eval, plan, presets,
//! bench); [`files`] (atomic writes, the sweep manifest) <- [`report`] <- [`sweep`]. [`presets`]
//! (the TOML presets embedded from `configs/`), [`profile_file`] (what `plan --profile --json`
//! writes and `--placement FILE` reads), [`log`] (the run's `train.log`), [`signals`] (SIGINT and
//! SIGTERM stop a run with a checkpoint), [`mpiexec`] and [`stdout`] (results on standard output, a
//! closed pipe a quiet end) depend on no other module.

#![deny(missing_docs)]
// `println!` panics when the reader of a pipe has gone; results go through `stdout::stdout()`.
#![deny(clippy::print_stdout)]

pub mod args;
pub mod cmd;
pub mod config;
pub mod files;
pub mod log;
pub mod mpiexec;
pub mod presets;
pub mod profile_file;
pub mod report;
pub mod signals;
pub mod stdout;
pub mod sweep;
