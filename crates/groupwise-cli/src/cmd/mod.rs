//! The subcommands that fit in a file each; `sweep` and `report` are modules of their own beside
//! this one.

pub mod bench;
pub mod bench_parallel;
pub mod eval;
pub mod plan;
pub mod presets;
pub mod search;
pub mod simulate;
pub mod trace;
pub mod train;
