//! The `groupwise` command: train, evaluate, plan and benchmark GN-DGL runs.

use std::process::ExitCode;

use clap::Parser;

use groupwise_cli::args::{Cli, Command};
use groupwise_cli::{cmd, report, sweep};

fn main() -> ExitCode {
    let cli = Cli::parse();
    groupwise_cli::log::init();
    if groupwise::device::keep_freed_memory() {
        tracing::debug!(
            "allocator: freed memory kept for reuse (GROUPWISE_MALLOC=system: glibc's)"
        );
    }
    if groupwise::model::own_batch_norm_kernel() {
        tracing::debug!(
            "batch norm: groupwise's kernel for training on the CPU (GROUPWISE_BATCH_NORM=libtorch: \
             libtorch's)"
        );
    }
    if groupwise::model::own_conv_kernel() {
        tracing::debug!(
            "convolutions: groupwise's kernel for narrow 3x3 ones on the CPU (GROUPWISE_CONV=libtorch: \
             libtorch's)"
        );
    }
    let result = match cli.command {
        Command::Train(a) => cmd::train::run(*a),
        Command::Eval(a) => cmd::eval::run(a).map(|()| ExitCode::SUCCESS),
        Command::Plan(a) => cmd::plan::run(*a).map(|()| ExitCode::SUCCESS),
        Command::Bench(a) => cmd::bench::run(a).map(|()| ExitCode::SUCCESS),
        Command::Presets(a) => cmd::presets::run(a).map(|()| ExitCode::SUCCESS),
        Command::Sweep(a) => sweep::run(*a).map(|()| ExitCode::SUCCESS),
        Command::Report(a) => report::run(a).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        // The reader of our output went away (`groupwise presets | head -1`): it has what it wanted.
        Err(e) if groupwise_cli::stdout::is_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
