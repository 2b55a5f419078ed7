//! The report's tables: `results.csv` (raw numbers, one row per run), the Markdown of `report.md`
//! (the same rows, readable, and the plots' captions), and `seeds.csv` with its "Across seeds"
//! section (one row per configuration run with several seeds). The CSV files are written by the
//! csv crate: a cell with a comma, a quote or a line break is quoted; every other cell is as written.

use std::fmt::Write as _;

use anyhow::{Context, Result};

use super::plots::PLOTS;
use super::runs::Row;
use super::stats::{SeedGroup, Spread};

/// The columns of `results.csv`.
const RESULTS_COLUMNS: [&str; 20] = [
    "run",
    "method",
    "plan",
    "groups",
    "aux_input",
    "epochs_done",
    "epochs",
    "finished",
    "head_accuracy",
    "ensemble_accuracy",
    "max_node_macs",
    "inference_macs",
    "params",
    "seconds_per_step",
    "seconds_per_epoch",
    "slowest_node_seconds_per_step",
    "cpu_seconds_per_step",
    "speedup",
    "max_node_macs_ratio",
    "runtime",
];

/// The columns of `seeds.csv`.
const SEEDS_COLUMNS: [&str; 15] = [
    "configuration",
    "method",
    "runs",
    "counted",
    "seeds",
    "head_mean",
    "head_std",
    "head_min",
    "head_max",
    "ensemble_mean",
    "ensemble_std",
    "max_node_macs",
    "inference_macs",
    "seconds_per_step_mean",
    "speedup",
];

/// `results.csv`: every run's raw numbers, speed-ups against `rows[base]`. Quoted where a cell
/// needs it (an explicit plan such as `1:2,2:1,3:0,3:4`, a run name with commas).
pub(super) fn results_csv(rows: &[Row], base: usize) -> Result<Vec<u8>> {
    let mut csv = csv::Writer::from_writer(Vec::new());
    csv.write_record(RESULTS_COLUMNS)?;
    for r in rows {
        let c = &r.config;
        csv.write_record([
            r.name.clone(),
            r.method(),
            c.plan.to_string(),
            c.groups.to_string(),
            c.aux_input.name(),
            r.metrics.len().to_string(),
            c.epochs.to_string(),
            r.finished.to_string(),
            num(r.head, 6),
            num(r.ensemble, 6),
            r.max_node_macs.to_string(),
            r.inference_macs.to_string(),
            r.params.to_string(),
            num(r.step_seconds, 6),
            num(r.epoch_seconds, 3),
            num(r.slowest_node_seconds, 6),
            num(r.cpu_seconds, 6),
            num(speedup(&rows[base], r), 4),
            num(mac_ratio(&rows[base], r), 4),
            r.runtime.clone(),
        ])?;
    }
    bytes(csv)
}

/// The start of `report.md`: title, what the columns mean, and a row per run.
pub(super) fn results_markdown(title: &str, rows: &[Row], base: usize) -> Result<String> {
    let mut md = String::new();
    writeln!(md, "# {title}\n")?;
    writeln!(
        md,
        "Accuracy is top-1 on the test split (the final epoch's, or the latest evaluated one for a run \
         still in progress). MACs are forward multiply-accumulates per image from the plan (METHOD.md \
         section 8): *max node* is the largest node with the paper's figure conventions, *inference* \
         the whole network. Times are measured: mean training seconds per step and per epoch \
         (evaluation excluded); per node, from the run's metrics: *slowest node* is the largest \
         compute time per step of one node (wall clock: its forward, backward and update; the \
         sequential path is one node), *CPU* the CPU seconds per step of all nodes' worker threads \
         together (intra-op helper threads not counted). Speed-up is {}'s seconds per step over the \
         run's; *MAC ratio* is the same ratio of max node MACs, the speed-up one node per worker \
         would give if time followed MACs.\n",
        rows[base].name
    )?;
    writeln!(
        md,
        "| run | method | epochs | head % | ensemble % | max node MACs | inference MACs | params | \
         s/step | s/epoch | slowest node s/step | CPU s/step | speed-up | MAC ratio |"
    )?;
    writeln!(
        md,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )?;
    for r in rows {
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}x | {}x |",
            r.name,
            r.method(),
            r.epochs(),
            pct(r.head),
            pct(r.ensemble),
            sci(r.max_node_macs),
            sci(r.inference_macs),
            r.params,
            num(r.step_seconds, 3),
            num(r.epoch_seconds, 1),
            num(r.slowest_node_seconds, 3),
            num(r.cpu_seconds, 3),
            num(speedup(&rows[base], r), 2),
            num(mac_ratio(&rows[base], r), 2)
        )?;
    }
    writeln!(md)?;
    Ok(md)
}

/// `seeds.csv` and the report's "Across seeds" section: each configuration's mean, spread and
/// range, speed-ups against the configuration of `rows[base]`.
pub(super) fn seed_tables(
    rows: &[Row],
    groups: &[SeedGroup],
    base: usize,
) -> Result<(Vec<u8>, String)> {
    let base_group = groups
        .iter()
        .find(|g| g.members.contains(&base))
        .context("the baseline run is in no seed group")?;
    let base_step = base_group
        .spread(rows, |r| r.step_seconds)
        .map_or(f64::NAN, |s| s.mean);
    let seeds = |g: &SeedGroup| -> Vec<String> {
        g.members
            .iter()
            .map(|&i| rows[i].config.seed.to_string())
            .collect()
    };
    let mut csv = csv::Writer::from_writer(Vec::new());
    csv.write_record(SEEDS_COLUMNS)?;
    let mut md = String::new();
    writeln!(
        md,
        "## Across seeds\n\nRuns that differ only in their seed, one row per configuration: mean \
         ± sample standard deviation and the range over its finished runs (*counted*; every run \
         with a test accuracy while none has finished). Speed-up is {}'s mean seconds per step over \
         the configuration's.\n",
        base_group.name
    )?;
    writeln!(
        md,
        "| configuration | method | seeds | counted | head % | head range % | ensemble % | \
         max node MACs | s/step | speed-up |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|")?;
    for g in groups {
        let first = &rows[g.members[0]];
        let members = g.counted(rows);
        let over = |f: fn(&Row) -> f64| Spread::of(members.iter().map(|r| f(r)));
        let head = over(|r| 100.0 * r.head);
        let ens = over(|r| 100.0 * r.ensemble);
        let step = over(|r| r.step_seconds);
        let counted = members.len();
        let get = |s: Option<Spread>, f: fn(&Spread) -> f64| s.as_ref().map_or(f64::NAN, f);
        let step_mean = get(step, |s| s.mean);
        csv.write_record([
            g.name.clone(),
            first.method(),
            g.members.len().to_string(),
            counted.to_string(),
            seeds(g).join(" "),
            num(get(head, |s| s.mean / 100.0), 6),
            num(get(head, |s| s.std / 100.0), 6),
            num(get(head, |s| s.min / 100.0), 6),
            num(get(head, |s| s.max / 100.0), 6),
            num(get(ens, |s| s.mean / 100.0), 6),
            num(get(ens, |s| s.std / 100.0), 6),
            first.max_node_macs.to_string(),
            first.inference_macs.to_string(),
            num(step_mean, 6),
            num(base_step / step_mean, 4),
        ])?;
        let mean_std = |s: Option<Spread>| match s {
            Some(s) if s.n > 1 => format!("{:.2} ± {:.2}", s.mean, s.std),
            Some(s) => format!("{:.2}", s.mean),
            None => "-".into(),
        };
        writeln!(
            md,
            "| {} | {} | {} | {}/{} | {} | {} | {} | {} | {} | {}x |",
            g.name,
            first.method(),
            seeds(g).join(", "),
            counted,
            g.members.len(),
            mean_std(head),
            head.map_or("-".into(), |s| format!("{:.2}-{:.2}", s.min, s.max)),
            mean_std(ens),
            sci(first.max_node_macs),
            num(step_mean, 3),
            num(base_step / step_mean, 2),
        )?;
    }
    writeln!(md)?;
    Ok((bytes(csv)?, md))
}

/// The end of `report.md`: each plot with what it shows.
pub(super) fn plot_sections(seeded: bool) -> Result<String> {
    let mut md = String::new();
    for (stem, what) in PLOTS {
        let seeds = if seeded && stem.starts_with("accuracy_vs") {
            " Each point is a configuration's mean over its seeds, the crosses its runs, the bar \
             one standard deviation either side."
        } else {
            ""
        };
        writeln!(md, "{what}{seeds}\n\n![{stem}]({stem}.svg)\n")?;
    }
    Ok(md)
}

/// The text a CSV writer wrote.
fn bytes(csv: csv::Writer<Vec<u8>>) -> Result<Vec<u8>> {
    csv.into_inner()
        .map_err(|e| e.into_error())
        .context("cannot write CSV")
}

/// `rows[base]`'s seconds per step over `r`'s.
fn speedup(base: &Row, r: &Row) -> f64 {
    base.step_seconds / r.step_seconds
}

/// `rows[base]`'s max node MACs over `r`'s: the speed-up if time followed MACs.
fn mac_ratio(base: &Row, r: &Row) -> f64 {
    base.max_node_macs as f64 / r.max_node_macs as f64
}

/// A fraction as a percentage with two decimals; `-` for NaN.
fn pct(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else {
        format!("{:.2}", 100.0 * x)
    }
}

/// `x` with `digits` decimals; `-` for NaN.
fn num(x: f64, digits: usize) -> String {
    if x.is_nan() {
        "-".into()
    } else {
        format!("{x:.digits$}")
    }
}

/// A count in scientific notation, `7.01e7`.
fn sci(x: u64) -> String {
    format!("{:.2e}", x as f64)
}
