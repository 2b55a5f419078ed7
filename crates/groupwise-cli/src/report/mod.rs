//! `groupwise report`: a results table (Markdown, CSV) and plots (SVG, PNG) of run directories.
//!
//! Everything comes from the run directories' files (`config.json`, `metrics.jsonl`, `summary.json`):
//! costs from the plan (METHOD.md section 8), accuracies and times as measured. Runs still in progress
//! are reported with the epochs they have.
//!
//! `runs` reads the directories into rows, `stats` groups runs that differ only in their seed,
//! `tables` writes the Markdown and CSV, `plots` (on `chart`'s axes, colours and font) the figures.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::args::ReportArgs;
use crate::files::atomic_write;
use crate::stdout::stdout;

mod chart;
pub mod gantt;
mod plots;
mod runs;
pub mod speedup;
mod stats;
mod tables;

pub use runs::Row;
pub use stats::{seed_groups, SeedGroup, Spread};

/// Report settings.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// See [`ReportArgs::baseline`].
    pub baseline: Option<String>,
    /// See [`ReportArgs::font`].
    pub font: Option<PathBuf>,
    /// See [`ReportArgs::title`].
    pub title: Option<String>,
}

/// `groupwise report`.
pub fn run(args: ReportArgs) -> Result<()> {
    let dirs = runs::expand(&args.dirs)?;
    let opts = Options {
        baseline: args.baseline,
        font: args.font,
        title: args.title,
    };
    write(&dirs, &args.out, &opts)?;
    writeln!(stdout(), "{}", args.out.join("report.md").display())?;
    Ok(())
}

/// Writes `report.md`, `results.csv` and the plots of the runs in `dirs` to `out`.
pub fn write(dirs: &[PathBuf], out: &Path, opts: &Options) -> Result<()> {
    let rows = dirs
        .iter()
        .map(|d| Row::read(d))
        .collect::<Result<Vec<_>>>()?;
    if rows.is_empty() {
        bail!("no runs to report");
    }
    let base = match &opts.baseline {
        Some(b) => rows
            .iter()
            .position(|r| &r.name == b)
            .with_context(|| format!("--baseline {b}: no run of that name"))?,
        None => rows.iter().position(Row::is_end_to_end).unwrap_or(0),
    };
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    chart::register_font(opts.font.as_deref())?;
    atomic_write(&out.join("results.csv"), &tables::results_csv(&rows, base)?)?;

    let title = opts.title.as_deref().unwrap_or("groupwise results");
    let mut md = tables::results_markdown(title, &rows, base)?;
    let groups = seed_groups(&rows);
    let seeded = groups.iter().any(|g| g.members.len() > 1);
    let seeds_csv = out.join("seeds.csv");
    if seeded {
        let (csv, section) = tables::seed_tables(&rows, &groups, base)?;
        md.push_str(&section);
        atomic_write(&seeds_csv, &csv)?;
    } else if seeds_csv.exists() {
        // A report over other runs in the same --out must not keep a stale table.
        std::fs::remove_file(&seeds_csv).with_context(|| format!("{}", seeds_csv.display()))?;
    }
    md.push_str(&tables::plot_sections(seeded)?);
    atomic_write(&out.join("report.md"), md.as_bytes())?;

    plots::draw(
        out,
        &plots::Runs {
            rows: &rows,
            groups: &groups,
            seeded,
        },
    )
}
