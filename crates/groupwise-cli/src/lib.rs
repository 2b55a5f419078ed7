//! The `groupwise` command as a library: flags, their resolution into a run's config, and one
//! module per subcommand. `src/main.rs` parses the flags and dispatches; tests call the same code
//! in-process.
//!
//! Dependencies point one way: [`args`] (raw flags) <- [`config`] (flags -> validated `RunConfig`)
//! <- [`cmd`] (train, eval, plan, presets, bench), and [`files`] <- [`report`] <- [`sweep`].
//! [`presets`] (the TOML presets embedded from `configs/`) is below them all.

#![deny(missing_docs)]

pub mod args;
pub mod cmd;
pub mod config;
pub mod files;
pub mod mpiexec;
pub mod presets;
pub mod report;
pub mod sweep;
