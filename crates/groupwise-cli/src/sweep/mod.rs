//! `groupwise sweep`: run a set of configurations, each in its own run directory under `--out`, one
//! `groupwise train` process each; skip finished runs, resume interrupted ones, show overall progress.
//!
//! A run's identity is its resolved config: the run directory `OUT/NAME` holds `config.json`, and a
//! sweep that finds a *different* config there stops with an error instead of mixing results. Training
//! writes a checkpoint after every epoch (atomically), so killing a sweep loses at most the epoch in
//! progress of the runs in progress; starting the same sweep again resumes them.
//!
//! `spec` says what runs, `state` where each run directory stands, `child` starts one; this module
//! runs them all with overall progress and writes the report.

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use groupwise::train::{RunDir, RunState};

use crate::args::{SweepArgs, TransportArg};
use crate::config::nominal_device;
use crate::files;
use crate::report;

mod child;
mod spec;
mod state;

pub use spec::{PlannedRun, SweepSpec};
pub use state::{epochs_logged, run_state};

/// A started `groupwise train`.
struct Running {
    index: usize,
    child: Child,
    started: Instant,
}

/// Runs the sweep.
pub fn run(args: SweepArgs) -> Result<()> {
    if args.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    if !matches!(args.runtime.transport, TransportArg::Local) {
        bail!(
            "sweep runs each configuration in this machine's processes; for MPI, run \
             `mpirun ... groupwise train --preset ...` per configuration"
        );
    }
    let (spec, file_out) = SweepSpec::from_args(&args)?;
    let out = args
        .out
        .clone()
        .or(file_out)
        .unwrap_or_else(|| PathBuf::from("runs/sweep"));
    let runs = spec.runs()?;
    for r in &runs {
        args.runtime
            .runtime()
            .validate(nominal_device(r.config.device))
            .with_context(|| format!("run {}", r.name))?;
    }
    let states = runs
        .iter()
        .map(|r| run_state(&out.join(&r.name), &r.config))
        .collect::<Result<Vec<_>>>()?;
    let total_epochs: usize = runs.iter().map(|r| r.config.epochs).sum();
    let (mut todo, mut skipped) = (Vec::new(), 0);
    eprintln!(
        "groupwise sweep: {} runs ({} epochs) in {}",
        runs.len(),
        total_epochs,
        out.display()
    );
    for (i, (r, s)) in runs.iter().zip(&states).enumerate() {
        let what = match s {
            RunState::Done => {
                skipped += 1;
                "done, skipped".to_string()
            }
            RunState::Resume(groupwise::checkpoint::Progress { epoch: epochs, .. }) => {
                todo.push(i);
                format!("resume after epoch {epochs}/{}", r.config.epochs)
            }
            RunState::Fresh => {
                todo.push(i);
                format!("{} epochs", r.config.epochs)
            }
        };
        eprintln!(
            "  {:<40} plan {:<4} G={:<2} {what}",
            r.name, r.config.plan, r.config.groups
        );
    }
    if args.dry_run {
        return Ok(());
    }
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    // The runs in sweep order, for `groupwise report OUT`.
    let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
    files::write_manifest(&out, &names)?;

    let bar = ProgressBar::new(total_epochs as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "sweep [{bar:30}] {pos}/{len} epochs, {prefix} runs done ({elapsed}<{eta}) {msg}",
        )
        .context("progress bar template")?
        .progress_chars("=> "),
    );
    let started = Instant::now();
    let progress = |bar: &ProgressBar, finished: usize| {
        let epochs: usize = runs
            .iter()
            .map(|r| epochs_logged(&out.join(&r.name)).min(r.config.epochs))
            .sum();
        // Without a terminal the bar is hidden: a line per epoch instead.
        if bar.is_hidden() && epochs as u64 != bar.position() {
            eprintln!(
                "sweep: {epochs}/{total_epochs} epochs, {finished}/{} runs done, {:.0}s",
                runs.len(),
                started.elapsed().as_secs_f64()
            );
        }
        bar.set_position(epochs as u64);
        bar.set_prefix(format!("{finished}/{}", runs.len()));
    };
    let exe = std::env::current_exe().context("cannot find the groupwise executable")?;
    let mut queue = todo.into_iter();
    let mut running: Vec<Running> = Vec::new();
    let (mut finished, mut failed) = (skipped, Vec::new());
    progress(&bar, finished);
    loop {
        while running.len() < args.jobs {
            let Some(i) = queue.next() else { break };
            let r = &runs[i];
            let dir = out.join(&r.name);
            let child = match child::start(&exe, &dir, r, &states[i], &args.runtime) {
                Ok(child) => child,
                Err(e) => {
                    // This run cannot start (another process trains in its directory): the
                    // others go on.
                    finished += 1;
                    failed.push(r.name.clone());
                    let line =
                        format!("[{finished}/{}] {}: NOT STARTED: {e:#}", runs.len(), r.name);
                    if bar.is_hidden() {
                        eprintln!("{line}");
                    } else {
                        bar.println(line);
                    }
                    continue;
                }
            };
            running.push(Running {
                index: i,
                child,
                started: Instant::now(),
            });
        }
        if running.is_empty() {
            break;
        }
        let names: Vec<&str> = running
            .iter()
            .map(|r| runs[r.index].name.as_str())
            .collect();
        bar.set_message(names.join(", "));
        std::thread::sleep(Duration::from_millis(500));
        let mut still = Vec::new();
        for mut r in running {
            match r.child.try_wait()? {
                None => still.push(r),
                Some(status) => {
                    finished += 1;
                    let run = &runs[r.index];
                    let dir = out.join(&run.name);
                    let line = if status.success() {
                        child::finished_line(&dir, r.started.elapsed())
                    } else {
                        failed.push(run.name.clone());
                        format!(
                            "FAILED ({status}); see {}: {}",
                            RunDir::new(&dir).log_path().display(),
                            child::last_line(&RunDir::new(&dir).log_path())
                        )
                    };
                    let line = format!("[{finished}/{}] {}: {line}", runs.len(), run.name);
                    if bar.is_hidden() {
                        eprintln!("{line}");
                    } else {
                        bar.println(line);
                    }
                }
            }
        }
        running = still;
        progress(&bar, finished);
    }
    bar.finish_and_clear();
    if !args.no_report {
        let dirs: Vec<PathBuf> = runs.iter().map(|r| out.join(&r.name)).collect();
        let done: Vec<PathBuf> = dirs
            .into_iter()
            .filter(|d| RunDir::new(d).finished())
            .collect();
        if !done.is_empty() {
            let report_dir = out.join("report");
            report::write(&done, &report_dir, &report::Options::default())?;
            eprintln!("report: {}", report_dir.join("report.md").display());
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} runs failed: {}",
            failed.len(),
            runs.len(),
            failed.join(", ")
        );
    }
    eprintln!("sweep complete: {} runs in {}", runs.len(), out.display());
    Ok(())
}
