//! Where a run directory of a sweep stands: fresh, resumable after some epoch, or done; a directory
//! holding another config is an error, never overwritten.

use std::path::Path;

use anyhow::{Context, Result};

use groupwise::train::{RunConfig, RunDir, RunState};

/// The state of `dir` for `planned` ([`RunDir::state`]); an error when it holds a run of another
/// config or its checkpoint cannot be read.
pub fn run_state(dir: &Path, planned: &RunConfig) -> Result<RunState> {
    RunDir::new(dir)
        .state(planned)
        .with_context(|| format!("{}: cannot tell where the run stands", dir.display()))
}

/// Complete epochs recorded in a run directory's `metrics.jsonl` (0 when it cannot be read: the
/// progress bar's estimate only).
pub fn epochs_logged(dir: &Path) -> usize {
    RunDir::new(dir)
        .read_metrics()
        .map_or(0, |m| m.epochs.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use groupwise::checkpoint;

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
        std::fs::write(rd.join(RunDir::CONFIG), &json).unwrap();
        assert_eq!(run_state(&rd, &config).unwrap(), RunState::Fresh);
        // A corrupt checkpoint: a clear error, nothing decided.
        let ckpt = rd.join(RunDir::CHECKPOINT);
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
        std::fs::write(rd.join(RunDir::METRICS), "{}\n{}\n").unwrap();
        assert_eq!(
            run_state(&rd, &config).unwrap(),
            RunState::Resume(checkpoint::Progress { epoch: 1, step: 0 })
        );
        std::fs::write(rd.join(RunDir::SUMMARY), "{}").unwrap();
        assert_eq!(run_state(&rd, &config).unwrap(), RunState::Done);
        // Another config in the same directory is never overwritten.
        let mut other = config.clone();
        other.epochs += 1;
        let e = run_state(&rd, &other).unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("different config (epochs differ)"), "{e}");
    }
}
