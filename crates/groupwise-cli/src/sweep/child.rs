//! One run of a sweep as a child process: `groupwise train` on its run directory (fresh from the
//! planned config, or `--resume`), its output appended to the run's log, killed with the sweep.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use groupwise::train::{RunDir, RunState};

use super::spec::PlannedRun;
use crate::args::RuntimeArgs;

/// The planned config a fresh run of a sweep replays (`train --config`).
const PLANNED: &str = "planned.json";

/// Starts `groupwise train` for `run` in `dir`, as `state` says (fresh or resumed).
pub(super) fn start(
    exe: &Path,
    dir: &Path,
    run: &PlannedRun,
    state: &RunState,
    runtime: &RuntimeArgs,
) -> Result<Child> {
    // A run that another process trains is left alone, before anything here is written (the
    // child would be refused too, but after the sweep had touched the directory).
    if let Some(holder) = RunDir::new(dir).holder()? {
        bail!(
            "{} is in use by {holder}, which is training there",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut cmd = Command::new(exe);
    cmd.arg("train").arg("--run-dir").arg(dir).arg("--quiet");
    match state {
        RunState::Resume { .. } => {
            cmd.arg("--resume");
            // The sweep's data location wins over the one the run started with (a moved dataset).
            if let Some(data) = &run.config.data.path {
                cmd.arg("--data-dir").arg(data);
            }
        }
        _ => {
            // The planned config, replayed exactly by `train --config`.
            let planned = RunDir::new(dir);
            let json = serde_json::to_string_pretty(&run.config)?;
            planned.write(PLANNED, json.as_bytes())?;
            cmd.arg("--config").arg(planned.file(PLANNED));
        }
    }
    cmd.args(runtime.to_args());
    // The run's own log: the trainer's decisions and, here, its stdout and stderr too.
    let log_path = RunDir::new(dir).log_path();
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    writeln!(log, "--- {:?}", cmd)?;
    cmd.stdout(log.try_clone()?)
        .stderr(log)
        .stdin(Stdio::null());
    die_with_parent(&mut cmd);
    cmd.spawn()
        .with_context(|| format!("cannot start {}", exe.display()))
}

/// The child gets SIGKILL when the sweep dies (a killed sweep leaves no orphan training in the
/// background; its run resumes from its last checkpoint next time). `pre_exec` and `prctl` have no
/// safe wrapper, hence `unsafe`.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches only the calling (child) process.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// What a finished run reached: its accuracies and how long it took.
pub(super) fn finished_line(dir: &Path, took: Duration) -> String {
    match RunDir::new(dir).read_summary().ok().flatten() {
        Some(s) => format!(
            "{:.2}% head, {:.2}% ensemble, {:.0}s",
            100.0 * s.test.head,
            100.0 * s.test.ensemble,
            took.as_secs_f64()
        ),
        None => format!("finished in {:.0}s (no summary.json?)", took.as_secs_f64()),
    }
}

/// The last non-empty line of the file at `path` (a failed run's error).
pub(super) fn last_line(path: &Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| {
            t.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(String::from)
        })
        .unwrap_or_default()
}
