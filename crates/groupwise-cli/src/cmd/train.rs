//! `groupwise train`: resolve the config, lock the run directory, start the nodes, show progress,
//! say how the invocation ended (finished, nothing to do, stopped at --max-steps, interrupted by a
//! signal) and how to continue.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use groupwise::checkpoint::Progress;
use groupwise::train::{self, Event, Invocation, Outcome, RunDir};
use tracing::info;

use crate::args::TrainArgs;
use crate::cmd::eval::print_eval;
use crate::config::base_config;
use crate::presets::preset_label;
use crate::signals::{self, StopSignals};
use crate::stdout::stdout;

/// Trains (or resumes) the run; on MPI every rank runs this, the leader reports. The exit status is
/// 0, or 128 + the signal that interrupted the run.
pub fn run(args: TrainArgs) -> Result<ExitCode> {
    let mut cluster = args.runtime.cluster()?;
    let leader = cluster.leader();
    // After MPI's initialisation, so that its own handlers do not replace these.
    let handlers = StopSignals::install()?;
    let config = match args.resolve() {
        Ok(c) => c,
        // Other ranks take the leader's config (the run directory may live on its machine only).
        Err(_) if !leader && args.resume => base_config(None)?,
        Err(e) => {
            cluster.abort_job(&format!("error: {e:#}"));
            return Err(e);
        }
    };
    let run_dir = match &args.run_dir {
        Some(d) => d.clone(),
        None => {
            let name = match (&args.preset, &args.config) {
                (Some(p), _) => preset_label(p),
                (None, Some(_)) => "replay".into(),
                (None, None) => "quick".into(),
            };
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            PathBuf::from("runs").join(format!("{name}-{secs}"))
        }
    };
    let quiet = args.quiet || !leader;
    // The leader trains under the directory's lock, taken before anything there is touched.
    let dir = if leader {
        match RunDir::open(&run_dir) {
            Ok(dir) => dir,
            Err(e) => {
                cluster.abort_job(&format!("error: {e}"));
                return Err(e.into());
            }
        }
    } else {
        RunDir::new(&run_dir)
    };
    if leader {
        crate::log::to_run_dir(&dir)?;
        let argv: Vec<String> = std::env::args().collect();
        info!("command: {}", argv.join(" "));
        let source = match (&args.config, &args.preset, args.resume) {
            (Some(path), _, _) => format!("config file {}", path.display()),
            (None, _, true) => format!("the run's own config ({})", RunDir::CONFIG),
            (None, Some(p), _) => format!("preset {p}"),
            (None, None, _) => "preset quick (the default)".into(),
        };
        info!(
            "config from {source}, then the flags given: {}",
            serde_json::to_string(&config)?
        );
        eprintln!(
            "groupwise: {} ResNet-{} widths {:?}, plan {}, G={}, {} epochs, batch {}, {} -> {}",
            config.data.kind,
            6 * config.blocks_per_stage + 2,
            config.widths,
            config.plan,
            config.groups,
            config.epochs,
            config.batch_size,
            cluster.describe(),
            run_dir.display()
        );
    }
    let style = ProgressStyle::with_template(
        "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})",
    )
    .context("progress bar template")?
    .progress_chars("=> ");
    let mut bar: Option<ProgressBar> = None;
    let mut observer = |event: Event| match event {
        Event::EpochStart { epoch, steps, lr } => {
            if !quiet {
                let b = ProgressBar::new(steps as u64);
                b.set_style(style.clone());
                b.set_prefix(format!("{epoch}/{} lr {lr:.4}", config.epochs));
                bar = Some(b);
            }
        }
        Event::Step {
            step,
            stats,
            images_per_second,
        } => {
            if let Some(b) = &bar {
                b.set_position(step as u64);
                b.set_message(format!(
                    "head loss {:.3} acc {:.3} | {:.0} img/s",
                    stats.head_loss,
                    stats.head_correct as f64 / stats.batch as f64,
                    images_per_second
                ));
            }
        }
        Event::Evaluating => {
            if let Some(b) = &bar {
                b.set_message("evaluating...");
            }
        }
        Event::EpochEnd(m) => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            if !leader {
                return;
            }
            let test = m
                .test
                .as_ref()
                .map(|t| {
                    format!(
                        " | test head {:.2}% ensemble {:.2}%",
                        100.0 * t.head,
                        100.0 * t.ensemble
                    )
                })
                .unwrap_or_default();
            eprintln!(
                "epoch {:>3} lr {:.4} train head loss {:.4} acc {:.2}%{} | {:.0} img/s, {:.0}s",
                m.epoch,
                m.lr,
                m.train_head_loss,
                100.0 * m.train_head_accuracy,
                test,
                m.images_per_second,
                m.elapsed_seconds
            );
        }
    };
    let invocation = Invocation {
        resume: args.resume,
        max_steps: args.max_steps,
        stop: Some(handlers.flag()),
    };
    let outcome = match train::run_on(&mut *cluster, &config, &dir, &invocation, &mut observer) {
        Ok(outcome) => outcome,
        Err(e) => {
            cluster.abort_job(&format!("error: {e}"));
            return Err(e.into());
        }
    };
    if let Some(b) = bar.take() {
        b.finish_and_clear();
    }
    let resume = resume_command(&args, &run_dir, &cluster.describe());
    let status = match outcome {
        Outcome::Finished(summary) => {
            let mut out = stdout();
            print_eval(&mut out, &summary.test)?;
            writeln!(
                out,
                "test accuracy: {:.2}% (head), {:.2}% (ensemble); {:.0}s, {:.0} train img/s; run \
                 dir {}",
                100.0 * summary.test.head,
                100.0 * summary.test.ensemble,
                summary.wall_seconds,
                summary.images_per_second,
                run_dir.display()
            )?;
            ExitCode::SUCCESS
        }
        Outcome::AlreadyFinished(summary) => {
            eprintln!(
                "groupwise: run {} is finished: {} epochs, {} steps, test accuracy {:.2}% (head), \
                 {:.2}% (ensemble); nothing to do",
                run_dir.display(),
                summary.epochs,
                summary.steps,
                100.0 * summary.test.head,
                100.0 * summary.test.ensemble
            );
            ExitCode::SUCCESS
        }
        Outcome::StepLimit(at) => {
            eprintln!(
                "groupwise: --max-steps {}: stopped {}; continue with: {resume}",
                args.max_steps.unwrap_or_default(),
                position(at, config.epochs)
            );
            ExitCode::SUCCESS
        }
        Outcome::Interrupted(at) => {
            let signal = handlers.received();
            let by = signal.map_or("a stop request", signals::name);
            if leader {
                let message = match dir.progress()? {
                    Some(_) => format!(
                        "groupwise: {by}: stopped {}, checkpoint written; continue with: {resume}",
                        position(at, config.epochs)
                    ),
                    None => format!(
                        "groupwise: {by}: stopped before the first step; nothing was trained \
                         (run the same command to start again)"
                    ),
                };
                info!("{message}");
                eprintln!("{message}");
            }
            signal.map_or(ExitCode::SUCCESS, |s| {
                ExitCode::from(signals::exit_status(s))
            })
        }
        Outcome::Follower => ExitCode::SUCCESS,
    };
    Ok(status)
}

/// Where a stopped run stands, as the checkpoint says: "after epoch 2 of 4" or "in epoch 3 of 4,
/// after step 5".
fn position(at: Progress, epochs: usize) -> String {
    match at.step {
        0 => format!("after epoch {} of {epochs}", at.epoch),
        s => format!("in epoch {} of {epochs}, after step {s}", at.epoch + 1),
    }
}

/// The command that continues this run (`runtime`: the cluster's description, `mpi:N` under MPI),
/// quoted for a POSIX shell.
fn resume_command(args: &TrainArgs, run_dir: &Path, runtime: &str) -> String {
    let exe = std::env::args()
        .next()
        .unwrap_or_else(|| "groupwise".into());
    let mut words: Vec<String> = Vec::new();
    if let Some(ranks) = runtime.strip_prefix("mpi:") {
        words.extend(["mpiexec".into(), "-np".into(), ranks.into()]);
    }
    words.extend([exe, "train".into(), "--resume".into(), "--run-dir".into()]);
    words.push(run_dir.display().to_string());
    if let Some(d) = &args.data_dir {
        words.extend(["--data-dir".into(), d.display().to_string()]);
    }
    if runtime.starts_with("mpi:") {
        words.extend(["--transport".into(), "mpi".into()]);
    }
    words
        .iter()
        .map(|w| shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `word` as one word of a POSIX shell command.
fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=,@+%".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_with_spaces_or_quotes_are_quoted() {
        assert_eq!(shell_quote("runs/a-1"), "runs/a-1");
        assert_eq!(shell_quote("my runs"), "'my runs'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn positions_read_as_the_checkpoint_says() {
        assert_eq!(
            position(Progress { epoch: 2, step: 0 }, 4),
            "after epoch 2 of 4"
        );
        assert_eq!(
            position(Progress { epoch: 2, step: 5 }, 4),
            "in epoch 3 of 4, after step 5"
        );
    }
}
