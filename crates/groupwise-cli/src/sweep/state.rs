//! Where a run directory of a sweep stands: fresh, resumable after some epoch, or done; a directory
//! holding another config is an error, never overwritten.

use std::io::BufRead;
use std::path::Path;

use anyhow::{bail, Context, Result};

use groupwise::checkpoint;
use groupwise::train::{self, RunConfig};

/// What a sweep does with a run directory.
#[derive(Clone, Debug, PartialEq)]
pub enum RunState {
    /// Nothing there yet (or nothing worth keeping): train from the start.
    Fresh,
    /// A checkpoint after `epochs` complete epochs: resume from it.
    Resume {
        /// Epochs complete.
        epochs: usize,
    },
    /// `summary.json` is there: finished, skip.
    Done,
}

/// The state of `dir` for `planned`; an error when it holds a run of another config.
pub fn run_state(dir: &Path, planned: &RunConfig) -> Result<RunState> {
    let config_path = dir.join(train::files::CONFIG);
    if !config_path.exists() {
        return Ok(RunState::Fresh);
    }
    let existing = train::read_config(&config_path)?;
    if &existing != planned {
        bail!(
            "{} holds a run of a different config; move it away, or choose another --out",
            dir.display()
        );
    }
    if dir.join(train::files::SUMMARY).exists() {
        return Ok(RunState::Done);
    }
    let ckpt = dir.join(train::files::CHECKPOINT);
    if ckpt.exists() {
        // The checkpoint, not metrics.jsonl, says how far the run got: an epoch's line is written
        // just before its checkpoint, and a kill in between leaves one line too many.
        let progress = checkpoint::read_progress(&ckpt)
            .with_context(|| format!("{}: cannot read where the run stands", dir.display()))?;
        return Ok(RunState::Resume {
            epochs: progress.epoch,
        });
    }
    Ok(RunState::Fresh)
}

/// Complete epochs recorded in a run directory's `metrics.jsonl`.
pub fn epochs_logged(dir: &Path) -> usize {
    std::fs::File::open(dir.join(train::files::METRICS))
        .map(|f| {
            std::io::BufReader::new(f)
                .lines()
                .map_while(|l| l.ok())
                .filter(|l| !l.trim().is_empty())
                .count()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_states_fresh_resume_done_and_conflict() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path();
        let config = crate::presets::preset("smoke").unwrap();
        let rd = dir.join("smoke");
        assert_eq!(run_state(&rd, &config).unwrap(), RunState::Fresh);
        // Killed before the first checkpoint: start again.
        std::fs::create_dir_all(&rd).unwrap();
        let json = serde_json::to_string(&config).unwrap();
        std::fs::write(rd.join(train::files::CONFIG), &json).unwrap();
        assert_eq!(run_state(&rd, &config).unwrap(), RunState::Fresh);
        // A corrupt checkpoint: a clear error, nothing decided.
        let ckpt = rd.join(train::files::CHECKPOINT);
        std::fs::write(&ckpt, b"x").unwrap();
        let e = run_state(&rd, &config).unwrap_err();
        assert!(format!("{e:#}").contains("cannot read"), "{e:#}");
        // A checkpoint after epoch 1 and a line of epoch 2 (killed between the two writes):
        // resume after epoch 1, as the checkpoint says.
        let progress = |e: i64| {
            vec![
                ("train.epoch".to_string(), tch::Tensor::from(e)),
                ("train.step".to_string(), tch::Tensor::from(0i64)),
            ]
        };
        checkpoint::write_atomic(&progress(1), &ckpt).unwrap();
        std::fs::write(rd.join(train::files::METRICS), "{}\n{}\n").unwrap();
        assert_eq!(
            run_state(&rd, &config).unwrap(),
            RunState::Resume { epochs: 1 }
        );
        std::fs::write(rd.join(train::files::SUMMARY), "{}").unwrap();
        assert_eq!(run_state(&rd, &config).unwrap(), RunState::Done);
        // Another config in the same directory is never overwritten.
        let mut other = config.clone();
        other.epochs += 1;
        let e = run_state(&rd, &other).unwrap_err();
        assert!(format!("{e}").contains("different config"), "{e}");
    }
}
