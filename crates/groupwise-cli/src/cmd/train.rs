//! `groupwise train`: resolve the config, start the nodes, show progress, print the result.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use groupwise::train::{self, Event, RunDir};
use tracing::info;

use crate::args::TrainArgs;
use crate::cmd::eval::print_eval;
use crate::config::base_config;
use crate::presets::preset_label;
use crate::stdout::stdout;

/// Trains (or resumes) the run; on MPI every rank runs this, the leader reports.
pub fn run(args: TrainArgs) -> Result<()> {
    let mut cluster = args.runtime.cluster()?;
    let leader = cluster.leader();
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
    if leader {
        crate::log::to_run_dir(&RunDir::new(&run_dir))?;
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
    let summary = match train::run_on(&mut *cluster, &config, &run_dir, args.resume, &mut observer)
    {
        Ok(Some(s)) => s,
        Ok(None) => return Ok(()),
        Err(e) => {
            cluster.abort_job(&format!("error: {e}"));
            return Err(e.into());
        }
    };
    let mut out = stdout();
    print_eval(&mut out, &summary.test)?;
    writeln!(
        out,
        "test accuracy: {:.2}% (head), {:.2}% (ensemble); {:.0}s, {:.0} train img/s; run dir {}",
        100.0 * summary.test.head,
        100.0 * summary.test.ensemble,
        summary.wall_seconds,
        summary.images_per_second,
        run_dir.display()
    )?;
    Ok(())
}
