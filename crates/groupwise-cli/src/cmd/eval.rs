//! `groupwise eval`: a saved run directory or checkpoint on its test split.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use groupwise::checkpoint::Restore;
use groupwise::eval::EvalResult;
use groupwise::train::{self, RunDir};

use crate::args::EvalArgs;
use crate::stdout::stdout;

/// Evaluates the checkpoint and prints the accuracies (or them all as JSON). Reads the run directory
/// without its lock: the checkpoint is replaced atomically, so a run may be training there.
pub fn run(args: EvalArgs) -> Result<()> {
    let (dir, ckpt) = if args.path.is_dir() {
        (args.path.clone(), RunDir::new(&args.path).checkpoint_path())
    } else {
        let dir = args
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        (dir, args.path.clone())
    };
    let mut config = RunDir::new(&dir)
        .read_config()
        .with_context(|| format!("{} is not a groupwise run directory", dir.display()))?;
    if let Some(moved) = &args.data_dir {
        let moved = std::path::absolute(moved)
            .with_context(|| format!("--data-dir '{}'", moved.display()))?;
        eprintln!(
            "groupwise: data from {} (--data-dir; the run's config.json says {})",
            moved.display(),
            config
                .data
                .path
                .as_ref()
                .map_or("the dataset's default directory".into(), |p| p
                    .display()
                    .to_string())
        );
        config.data.path = Some(moved);
    }
    let mut prepared = train::prepare(&config)?;
    let progress = groupwise::checkpoint::load(&mut prepared.net, &ckpt, Restore::Weights)?;
    let result = groupwise::eval::evaluate(
        &prepared.net,
        std::sync::Arc::new(prepared.splits.test),
        prepared.splits.test_transform,
        config.eval_batch_size,
        config.loader_workers,
        prepared.device,
    )?;
    let mut out = stdout();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&result)?)?;
    } else {
        writeln!(
            out,
            "{} after {} epochs (+{} steps): {} test images",
            ckpt.display(),
            progress.epoch,
            progress.step,
            result.images
        )?;
        print_eval(&mut out, &result)?;
        writeln!(
            out,
            "test accuracy: {:.2}% (head), {:.2}% (ensemble)",
            100.0 * result.head,
            100.0 * result.ensemble
        )?;
    }
    Ok(())
}

/// Prints every auxiliary classifier's accuracy, a line per boundary (also after `train`).
pub(crate) fn print_eval(out: &mut impl Write, r: &EvalResult) -> io::Result<()> {
    for (k, units) in r.units.iter().enumerate() {
        let groups: Vec<String> = units.iter().map(|a| format!("{:.2}", 100.0 * a)).collect();
        writeln!(
            out,
            "  boundary {k}: groups [{}]%, group mean {:.2}%",
            groups.join(", "),
            100.0 * r.boundaries[k]
        )?;
    }
    Ok(())
}
