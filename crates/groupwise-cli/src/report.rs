//! `groupwise report`: a results table (Markdown, CSV) and plots (SVG, PNG) of run directories.
//!
//! Everything comes from the run directories' files (`config.json`, `metrics.jsonl`, `summary.json`):
//! costs from the plan (METHOD.md section 8), accuracies and times as measured. Runs still in progress
//! are reported with the epochs they have.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;

use groupwise::train::{self, EpochMetrics, RunConfig, Summary};

use crate::args::ReportArgs;
use crate::files::{self, atomic_write};

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
    let dirs = expand(&args.dirs)?;
    let opts = Options {
        baseline: args.baseline,
        font: args.font,
        title: args.title,
    };
    write(&dirs, &args.out, &opts)?;
    println!("{}", args.out.join("report.md").display());
    Ok(())
}

/// Run directories named by `dirs`: each one that holds a `config.json`, else its subdirectories
/// that do.
fn expand(dirs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for d in dirs {
        if d.join(train::files::CONFIG).exists() {
            out.push(d.clone());
            continue;
        }
        let entries = std::fs::read_dir(d)
            .with_context(|| format!("{} is not a run directory (no config.json)", d.display()))?;
        let mut subs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join(train::files::CONFIG).exists())
            .collect();
        if subs.is_empty() {
            bail!(
                "{} is neither a run directory nor a directory of runs (no config.json)",
                d.display()
            );
        }
        subs.sort();
        // A sweep's directory lists its runs in sweep order; the rest follow by name.
        if let Some(order) = files::read_manifest(d) {
            let rank = |p: &PathBuf| {
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
                order
                    .iter()
                    .position(|o| Some(o) == name.as_ref())
                    .unwrap_or(usize::MAX)
            };
            subs.sort_by_key(rank);
        }
        out.extend(subs);
    }
    Ok(out)
}

/// One run, as read from its directory.
#[derive(Clone, Debug)]
pub struct Row {
    /// Directory name.
    pub name: String,
    /// Its config.
    pub config: RunConfig,
    /// Every complete epoch's metrics.
    pub metrics: Vec<EpochMetrics>,
    /// Whether `summary.json` is there.
    pub finished: bool,
    /// Final (or latest) test accuracy of the head, in [0, 1]; NaN before any evaluation.
    pub head: f64,
    /// Same for the layerwise ensemble.
    pub ensemble: f64,
    /// Largest per-node forward MACs (figure conventions).
    pub max_node_macs: u64,
    /// Inference MACs per image.
    pub inference_macs: u64,
    /// Trainable parameters.
    pub params: u64,
    /// Mean measured seconds per training step over the logged epochs.
    pub step_seconds: f64,
    /// Mean measured training seconds per epoch.
    pub epoch_seconds: f64,
    /// How the nodes ran.
    pub runtime: String,
}

impl Row {
    fn read(dir: &Path) -> Result<Row> {
        let config = train::read_config(&dir.join(train::files::CONFIG))?;
        let metrics_path = dir.join(train::files::METRICS);
        let mut metrics = Vec::new();
        if let Ok(text) = std::fs::read_to_string(&metrics_path) {
            for (i, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                metrics.push(serde_json::from_str::<EpochMetrics>(line).with_context(|| {
                    format!(
                        "{} line {}: not a metrics line",
                        metrics_path.display(),
                        i + 1
                    )
                })?);
            }
        }
        let summary_path = dir.join(train::files::SUMMARY);
        let summary: Option<Summary> =
            match std::fs::read_to_string(&summary_path) {
                Ok(t) => Some(serde_json::from_str(&t).with_context(|| {
                    format!("{}: not a groupwise summary", summary_path.display())
                })?),
                Err(_) => None,
            };
        let plan = config
            .declared_plan()
            .with_context(|| format!("{}: the run's plan", dir.display()))?;
        let latest = metrics.iter().rev().find_map(|m| m.test.clone());
        let test = summary.as_ref().map(|s| s.test.clone()).or(latest);
        let (steps, secs) = metrics.iter().fold((0usize, 0f64), |(n, t), m| {
            (n + m.steps, t + m.train_seconds)
        });
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        Ok(Row {
            name,
            finished: summary.is_some(),
            head: test.as_ref().map_or(f64::NAN, |t| t.head),
            ensemble: test.as_ref().map_or(f64::NAN, |t| t.ensemble),
            max_node_macs: plan.figure_max_node_macs(),
            inference_macs: plan.inference_macs(),
            params: plan.total_params(),
            step_seconds: if steps > 0 {
                secs / steps as f64
            } else {
                f64::NAN
            },
            epoch_seconds: if metrics.is_empty() {
                f64::NAN
            } else {
                secs / metrics.len() as f64
            },
            runtime: summary.map(|s| s.runtime).unwrap_or_default(),
            config,
            metrics,
        })
    }

    fn is_end_to_end(&self) -> bool {
        self.config.plan == "1" && self.config.groups == 1
    }

    /// `e2e`, `DGL K=4`, `GN-DGL G=2 K=4`, `1A G=4`, with ` InfoPro` when it has the decoder loss.
    pub fn method(&self) -> String {
        let c = &self.config;
        let k = c.plan.as_str();
        let base = match (k, c.groups) {
            ("1", 1) => "e2e".to_string(),
            ("1A", g) => format!("1A G={g}"),
            (k, 1) => format!("DGL K={k}"),
            (k, g) => format!("GN-DGL G={g} K={k}"),
        };
        if c.loss.infopro.is_some() {
            format!("{base} InfoPro")
        } else {
            base
        }
    }

    fn epochs(&self) -> String {
        if self.finished {
            format!("{}", self.metrics.len().max(self.config.epochs))
        } else {
            format!("{}/{}", self.metrics.len(), self.config.epochs)
        }
    }
}

/// Runs that differ only in their seeds (weights, data order, augmentation): one configuration
/// measured several times, reported as a mean, a spread and a range.
pub struct SeedGroup {
    /// The members' common name: the first member's with its `_seed=N` part taken out.
    pub name: String,
    /// Indices of the member runs, in report order.
    pub members: Vec<usize>,
}

/// Mean, sample standard deviation (NaN for fewer than two values), minimum and maximum.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (n - 1).
    pub std: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// How many values.
    pub n: usize,
}

impl Spread {
    /// Of the finite values; `None` when there are none.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n as f64;
        let std = if n > 1 {
            (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            f64::NAN
        };
        Some(Spread {
            mean,
            std,
            min: v.iter().cloned().fold(f64::INFINITY, f64::min),
            max: v.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
            n,
        })
    }
}

/// The rows of `rows`, grouped by config with the seeds (and `max_steps`, how far a run was asked
/// to go this time) left out; groups in order of first appearance.
pub fn seed_groups(rows: &[Row]) -> Vec<SeedGroup> {
    let seedless = |c: &RunConfig| RunConfig {
        seed: 0,
        data: groupwise::data::DataSpec {
            seed: 0,
            ..c.data.clone()
        },
        max_steps: None,
        ..c.clone()
    };
    let mut keyed: Vec<(RunConfig, SeedGroup)> = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let key = seedless(&r.config);
        match keyed.iter_mut().find(|(k, _)| *k == key) {
            Some((_, g)) => g.members.push(i),
            None => {
                let name = r
                    .name
                    .split('_')
                    .filter(|part| !part.starts_with("seed="))
                    .collect::<Vec<_>>()
                    .join("_");
                keyed.push((
                    key,
                    SeedGroup {
                        name: if name.is_empty() { r.method() } else { name },
                        members: vec![i],
                    },
                ))
            }
        }
    }
    keyed.into_iter().map(|(_, g)| g).collect()
}

impl SeedGroup {
    /// The members that count in its numbers: the finished ones with a test accuracy, or, while
    /// none has finished, every one with a test accuracy.
    fn counted<'a>(&self, rows: &'a [Row]) -> Vec<&'a Row> {
        let with_test = || {
            self.members
                .iter()
                .map(|&i| &rows[i])
                .filter(|r| r.head.is_finite())
        };
        let finished: Vec<&Row> = with_test().filter(|r| r.finished).collect();
        if finished.is_empty() {
            with_test().collect()
        } else {
            finished
        }
    }

    /// Spread of `f` over the counted members.
    fn spread(&self, rows: &[Row], f: impl Fn(&Row) -> f64) -> Option<Spread> {
        Spread::of(self.counted(rows).into_iter().map(f))
    }
}

fn pct(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else {
        format!("{:.2}", 100.0 * x)
    }
}

fn num(x: f64, digits: usize) -> String {
    if x.is_nan() {
        "-".into()
    } else {
        format!("{x:.digits$}")
    }
}

fn sci(x: u64) -> String {
    format!("{:.2e}", x as f64)
}

/// Draws `$draw` (generic over the backend) as `OUT/STEM.svg` and `OUT/STEM.png`, each written to a
/// temporary name and renamed.
macro_rules! plot_both {
    ($out:expr, $stem:expr, $rows:expr, $draw:ident) => {{
        let (out, stem): (&Path, &str) = ($out, $stem);
        for ext in ["svg", "png"] {
            let tmp = out.join(format!("{stem}.tmp.{ext}"));
            {
                let drawn = if ext == "svg" {
                    let root = SVGBackend::new(&tmp, SIZE).into_drawing_area();
                    $draw(&root, $rows).and_then(|()| root.present().map_err(perr))
                } else {
                    let root = BitMapBackend::new(&tmp, SIZE).into_drawing_area();
                    $draw(&root, $rows).and_then(|()| root.present().map_err(perr))
                };
                drawn
                    .with_context(|| format!("{}", out.join(format!("{stem}.{ext}")).display()))?;
            }
            let dst = out.join(format!("{stem}.{ext}"));
            std::fs::rename(&tmp, &dst).with_context(|| format!("{}", dst.display()))?;
        }
    }};
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
    register_font(opts.font.as_deref())?;
    let speedup = |r: &Row| rows[base].step_seconds / r.step_seconds;
    let ideal = |r: &Row| rows[base].max_node_macs as f64 / r.max_node_macs as f64;

    // CSV: raw numbers.
    let mut csv = String::from(
        "run,method,plan,groups,aux_input,epochs_done,epochs,finished,head_accuracy,ensemble_accuracy,\
         max_node_macs,inference_macs,params,seconds_per_step,seconds_per_epoch,speedup,\
         max_node_macs_ratio,runtime\n",
    );
    for r in &rows {
        let c = &r.config;
        writeln!(
            csv,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            r.name,
            r.method(),
            c.plan,
            c.groups,
            aux_name(c),
            r.metrics.len(),
            c.epochs,
            r.finished,
            num(r.head, 6),
            num(r.ensemble, 6),
            r.max_node_macs,
            r.inference_macs,
            r.params,
            num(r.step_seconds, 6),
            num(r.epoch_seconds, 3),
            num(speedup(r), 4),
            num(ideal(r), 4),
            r.runtime
        )?;
    }
    atomic_write(&out.join("results.csv"), csv.as_bytes())?;

    // Markdown.
    let mut md = String::new();
    let title = opts.title.as_deref().unwrap_or("groupwise results");
    writeln!(md, "# {title}\n")?;
    writeln!(
        md,
        "Accuracy is top-1 on the test split (the final epoch's, or the latest evaluated one for a run \
         still in progress). MACs are forward multiply-accumulates per image from the plan (METHOD.md \
         section 8): *max node* is the largest node with the paper's figure conventions, *inference* \
         the whole network. Times are measured: mean training seconds per step and per epoch \
         (evaluation excluded). Speed-up is {}'s seconds per step over the run's; *MAC ratio* is the \
         same ratio of max node MACs, the speed-up one node per worker would give if time followed \
         MACs.\n",
        rows[base].name
    )?;
    writeln!(
        md,
        "| run | method | epochs | head % | ensemble % | max node MACs | inference MACs | params | \
         s/step | s/epoch | speed-up | MAC ratio |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|")?;
    for r in &rows {
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}x | {}x |",
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
            num(speedup(r), 2),
            num(ideal(r), 2)
        )?;
    }
    writeln!(md)?;
    let groups = seed_groups(&rows);
    let seeded = groups.iter().any(|g| g.members.len() > 1);
    if seeded {
        write_seed_tables(&rows, &groups, base, out, &mut md)?;
    } else {
        // A report over other runs in the same --out must not keep a stale table.
        let stale = out.join("seeds.csv");
        if stale.exists() {
            std::fs::remove_file(&stale).with_context(|| format!("{}", stale.display()))?;
        }
    }
    let plots = [
        (
            "accuracy_vs_max_node_macs",
            "Accuracy against the largest node's MACs; bubble area follows inference MACs (the \
             paper's figure).",
        ),
        (
            "accuracy_vs_step_time",
            "Accuracy against measured seconds per training step.",
        ),
        (
            "curves",
            "Training curves: head test accuracy and head training loss by epoch.",
        ),
        (
            "units",
            "Auxiliary classifiers' test accuracy by depth (boundary) and group: the line is the \
             group mean, the dots the groups.",
        ),
    ];
    for (stem, what) in plots {
        let seeds = if seeded && stem.starts_with("accuracy_vs") {
            " Each point is a configuration's mean over its seeds, the crosses its runs, the bar \
             one standard deviation either side."
        } else {
            ""
        };
        writeln!(md, "{what}{seeds}\n\n![{stem}]({stem}.svg)\n")?;
    }
    atomic_write(&out.join("report.md"), md.as_bytes())?;

    let runs = Runs {
        rows: &rows,
        groups: &groups,
        seeded,
    };
    plot_both!(out, "accuracy_vs_max_node_macs", &runs, bubbles);
    plot_both!(out, "accuracy_vs_step_time", &runs, versus_time);
    plot_both!(out, "curves", &runs, curves);
    plot_both!(out, "units", &runs, units);
    Ok(())
}

/// The runs of a report and their seed groups; `seeded` when some configuration ran with several
/// seeds, and the plots then show one point per configuration.
struct Runs<'a> {
    rows: &'a [Row],
    groups: &'a [SeedGroup],
    seeded: bool,
}

impl Runs<'_> {
    /// Each run's colour and legend entry: its own, or its configuration's when seeded (a legend
    /// shows each entry once).
    fn styles(&self) -> Vec<(RGBColor, String)> {
        let mut styles = vec![(BLACK, String::new()); self.rows.len()];
        if self.seeded {
            for (j, g) in self.groups.iter().enumerate() {
                for &i in &g.members {
                    styles[i] = (run_colour(j), g.name.clone());
                }
            }
        } else {
            for (i, r) in self.rows.iter().enumerate() {
                styles[i] = (run_colour(i), r.name.clone());
            }
        }
        styles
    }
}

/// `seeds.csv` and the report's "Across seeds" table: each configuration's mean, spread and range.
fn write_seed_tables(
    rows: &[Row],
    groups: &[SeedGroup],
    base: usize,
    out: &Path,
    md: &mut String,
) -> Result<()> {
    let base_group = groups
        .iter()
        .find(|g| g.members.contains(&base))
        .expect("every run is in a group");
    let base_step = base_group
        .spread(rows, |r| r.step_seconds)
        .map_or(f64::NAN, |s| s.mean);
    let seeds = |g: &SeedGroup| -> Vec<String> {
        g.members
            .iter()
            .map(|&i| rows[i].config.seed.to_string())
            .collect()
    };
    let mut csv = String::from(
        "configuration,method,runs,counted,seeds,head_mean,head_std,head_min,head_max,\
         ensemble_mean,ensemble_std,max_node_macs,inference_macs,seconds_per_step_mean,speedup\n",
    );
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
        writeln!(
            csv,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            g.name,
            first.method(),
            g.members.len(),
            counted,
            seeds(g).join(" "),
            num(get(head, |s| s.mean / 100.0), 6),
            num(get(head, |s| s.std / 100.0), 6),
            num(get(head, |s| s.min / 100.0), 6),
            num(get(head, |s| s.max / 100.0), 6),
            num(get(ens, |s| s.mean / 100.0), 6),
            num(get(ens, |s| s.std / 100.0), 6),
            first.max_node_macs,
            first.inference_macs,
            num(step_mean, 6),
            num(base_step / step_mean, 4),
        )?;
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
    atomic_write(&out.join("seeds.csv"), csv.as_bytes())
}

fn aux_name(c: &RunConfig) -> String {
    match c.aux_input {
        groupwise::plan::AuxInput::StopGradient => "stop-gradient".into(),
        groupwise::plan::AuxInput::Isolated => "isolated".into(),
        groupwise::plan::AuxInput::Partial(r) => format!("partial({r})"),
    }
}

/// The font every plot's text uses.
const FONT: &str = "sans-serif";

/// Registers a TrueType file as [`FONT`] (once per process).
fn register_font(explicit: Option<&Path>) -> Result<()> {
    static DONE: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
    let candidates = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
    ];
    let result = DONE.get_or_init(|| {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => match candidates.iter().map(PathBuf::from).find(|p| p.exists()) {
                Some(p) => p,
                None => {
                    return Err("no TrueType font for the plots: install fonts-dejavu-core \
                         (apt-get install fonts-dejavu-core) or pass --font FILE.ttf"
                        .into())
                }
            },
        };
        let bytes = std::fs::read(&path).map_err(|e| format!("--font {}: {e}", path.display()))?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font(FONT, FontStyle::Normal, bytes)
            .map_err(|_| format!("{} is not a TrueType font", path.display()))
    });
    result.clone().map_err(|e| anyhow!(e))
}

const SIZE: (u32, u32) = (960, 640);

type Area<DB> = DrawingArea<DB, Shift>;

/// A plotting error as text (the backends' error types differ).
fn perr<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plotting: {e:?}")
}

/// The series legend, boxed in the lower right corner.
fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    font_size: u32,
) -> Result<()> {
    chart
        .configure_series_labels()
        .label_font((FONT, font_size))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(perr)
}

/// The paper's colours: end-to-end black, DGL green, G=2 blue, G=4 yellow, G=8 brown; other G from
/// a palette.
fn family_colour(r: &Row) -> RGBColor {
    match (r.is_end_to_end(), r.config.groups) {
        (true, _) => RGBColor(20, 20, 20),
        (false, 1) => RGBColor(34, 139, 34),
        (false, 2) => RGBColor(31, 90, 200),
        (false, 4) => RGBColor(225, 170, 0),
        (false, 8) => RGBColor(140, 80, 30),
        (false, g) => {
            let c = Palette99::pick(g as usize).to_rgba();
            RGBColor(c.0, c.1, c.2)
        }
    }
}

fn family_name(r: &Row) -> String {
    match (r.is_end_to_end(), r.config.groups) {
        (true, _) => "end-to-end".into(),
        (false, 1) => "DGL (G=1)".into(),
        (false, g) => format!("G={g}"),
    }
}

/// One colour per run: ten dark, distinct colours, then a palette.
fn run_colour(i: usize) -> RGBColor {
    const COLOURS: [RGBColor; 10] = [
        RGBColor(20, 20, 20),
        RGBColor(34, 139, 34),
        RGBColor(31, 90, 200),
        RGBColor(230, 120, 0),
        RGBColor(140, 80, 30),
        RGBColor(200, 30, 60),
        RGBColor(120, 60, 170),
        RGBColor(0, 140, 140),
        RGBColor(120, 120, 120),
        RGBColor(180, 150, 0),
    ];
    COLOURS.get(i).copied().unwrap_or_else(|| {
        let c = Palette99::pick(i).to_rgba();
        RGBColor(c.0, c.1, c.2)
    })
}

/// `[lo, hi]` of accuracies in percent, padded, within [0, 100].
fn accuracy_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0..100.0;
    }
    let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let pad = ((hi - lo) * 0.15).max(1.0);
    (lo - pad).max(0.0)..(hi + pad).min(101.0)
}

/// `[lo, hi]` of positive values on a log axis, padded by a factor.
fn log_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let v: Vec<f64> = values.filter(|x| x.is_finite() && *x > 0.0).collect();
    if v.is_empty() {
        return 1.0..10.0;
    }
    let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    lo / 1.6..hi * 1.6
}

/// One point of a scatter: a run, or a configuration over its seeds (the mean, with each run
/// beside it and a bar of one standard deviation either side).
struct Point {
    x: f64,
    /// Head test accuracy, %.
    y: f64,
    /// `(mean - std, mean + std)` of a configuration over two or more seeds.
    bar: Option<(f64, f64)>,
    /// The configuration's runs, `(x, %)`.
    runs: Vec<(f64, f64)>,
    radius: i32,
    colour: RGBColor,
    family: String,
    method: String,
    name: String,
}

/// The points of a scatter of head accuracy against `x`: one per run, or one per configuration
/// when seeded; runs without a test accuracy or a positive `x` are left out.
fn points(runs: &Runs, x: &dyn Fn(&Row) -> f64, radius: &dyn Fn(&Row) -> i32) -> Vec<Point> {
    let shown = |r: &Row| r.head.is_finite() && x(r).is_finite() && x(r) > 0.0;
    let point = |r: &Row, name: &str, members: Vec<&Row>| {
        let xs = Spread::of(members.iter().map(|m| x(m)))?;
        let ys = Spread::of(members.iter().map(|m| 100.0 * m.head))?;
        Some(Point {
            x: xs.mean,
            y: ys.mean,
            bar: (ys.n > 1).then_some((ys.mean - ys.std, ys.mean + ys.std)),
            runs: if ys.n > 1 {
                members.iter().map(|m| (x(m), 100.0 * m.head)).collect()
            } else {
                Vec::new()
            },
            radius: radius(r),
            colour: family_colour(r),
            family: family_name(r),
            method: if ys.n > 1 {
                format!("{} (n={})", r.method(), ys.n)
            } else {
                r.method()
            },
            name: if ys.n > 1 {
                format!("{name} (n={})", ys.n)
            } else {
                name.to_string()
            },
        })
    };
    if runs.seeded {
        runs.groups
            .iter()
            .filter_map(|g| {
                let members: Vec<&Row> = g
                    .counted(runs.rows)
                    .into_iter()
                    .filter(|r| shown(r))
                    .collect();
                point(members.first()?, &g.name, members)
            })
            .collect()
    } else {
        runs.rows
            .iter()
            .filter(|r| shown(r))
            .filter_map(|r| point(r, &r.name, vec![r]))
            .collect()
    }
}

/// Scatter of head accuracy against an x value (log x axis), labelled, coloured by family.
fn scatter<DB: DrawingBackend>(
    root: &Area<DB>,
    shown: &[Point],
    caption: &str,
    x_desc: &str,
) -> Result<()> {
    root.fill(&WHITE).map_err(perr)?;
    let xr = log_range(
        shown
            .iter()
            .flat_map(|p| std::iter::once(p.x).chain(p.runs.iter().map(|r| r.0))),
    );
    let (ticks, grid) = log_ticks(&xr);
    let yr = accuracy_range(shown.iter().flat_map(|p| {
        let bar = p.bar.map_or(Vec::new(), |(lo, hi)| vec![lo, hi]);
        std::iter::once(p.y)
            .chain(bar)
            .chain(p.runs.iter().map(|r| r.1))
    }));
    let mut chart = ChartBuilder::on(root)
        .caption(caption, (FONT, 22))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(
            xr.log_scale()
                .with_key_points(ticks)
                .with_light_points(grid),
            yr,
        )
        .map_err(perr)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("test accuracy, head (%)")
        .x_label_formatter(&log_label)
        .label_style((FONT, 14))
        .draw()
        .map_err(perr)?;
    // Points are labelled with their method, or with the run's (configuration's) name where
    // methods repeat (a grid over budgets, say).
    let unique = shown
        .iter()
        .all(|p| shown.iter().filter(|q| q.method == p.method).count() == 1);
    let mut families: Vec<String> = Vec::new();
    for p in shown {
        let colour = p.colour;
        let at = (p.x, p.y);
        let series = chart
            .draw_series(std::iter::once(Circle::new(
                at,
                p.radius,
                colour.mix(0.45).filled(),
            )))
            .map_err(perr)?;
        if !families.contains(&p.family) {
            series
                .label(p.family.clone())
                .legend(move |(x, y)| Circle::new((x + 8, y), 6, colour.filled()));
            families.push(p.family.clone());
        }
        if let Some((lo, hi)) = p.bar {
            let line = colour.stroke_width(2);
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(p.x, lo), (p.x, hi)],
                    line,
                )))
                .map_err(perr)?;
            chart
                .draw_series([lo, hi].map(|y| {
                    EmptyElement::at((p.x, y)) + PathElement::new(vec![(-6, 0), (6, 0)], line)
                }))
                .map_err(perr)?;
        }
        chart
            .draw_series(
                p.runs
                    .iter()
                    .map(|&r| Cross::new(r, 3, colour.stroke_width(1))),
            )
            .map_err(perr)?;
        chart
            .draw_series(std::iter::once(Circle::new(at, 2, colour.filled())))
            .map_err(perr)?;
        chart
            .draw_series(std::iter::once(
                EmptyElement::at(at)
                    + Text::new(
                        if unique {
                            p.method.clone()
                        } else {
                            p.name.clone()
                        },
                        (7, -14),
                        (FONT, 13).into_font().color(&BLACK),
                    ),
            ))
            .map_err(perr)?;
    }
    legend(&mut chart, 14)?;
    Ok(())
}

/// The paper's figure: accuracy against max node MACs, bubble area following inference MACs.
fn bubbles<DB: DrawingBackend>(root: &Area<DB>, runs: &Runs) -> Result<()> {
    let biggest = runs
        .rows
        .iter()
        .map(|r| r.inference_macs)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let caption = if runs.seeded {
        "Accuracy vs largest node (bubble area: inference MACs; bars: ±1 std over seeds)"
    } else {
        "Accuracy vs largest node (bubble area: inference MACs)"
    };
    scatter(
        root,
        &points(runs, &|r| r.max_node_macs as f64, &|r| {
            (6.0 + 26.0 * (r.inference_macs as f64 / biggest).sqrt()) as i32
        }),
        caption,
        "max node forward MACs per image (log)",
    )
}

/// Accuracy against measured seconds per step.
fn versus_time<DB: DrawingBackend>(root: &Area<DB>, runs: &Runs) -> Result<()> {
    scatter(
        root,
        &points(runs, &|r| r.step_seconds, &|_| 8),
        "Accuracy vs measured training time",
        "seconds per training step, measured (log)",
    )
}

/// Head test accuracy and head training loss by epoch, one line per run (one colour per
/// configuration when seeded).
fn curves<DB: DrawingBackend>(root: &Area<DB>, runs: &Runs) -> Result<()> {
    let (rows, styles) = (runs.rows, runs.styles());
    root.fill(&WHITE).map_err(perr)?;
    let (left, right) = root.split_horizontally(SIZE.0 / 2);
    let epochs = rows
        .iter()
        .map(|r| r.metrics.iter().map(|m| m.epoch).max().unwrap_or(1))
        .max()
        .unwrap_or(1)
        .max(2) as f64;
    let tests = |r: &Row| -> Vec<(f64, f64)> {
        r.metrics
            .iter()
            .filter_map(|m| m.test.as_ref().map(|t| (m.epoch as f64, 100.0 * t.head)))
            .collect()
    };
    let losses = |r: &Row| -> Vec<(f64, f64)> {
        r.metrics
            .iter()
            .filter(|m| m.train_head_loss.is_finite())
            .map(|m| (m.epoch as f64, m.train_head_loss))
            .collect()
    };
    let yr = accuracy_range(rows.iter().flat_map(|r| tests(r).into_iter().map(|p| p.1)));
    let lmax = rows
        .iter()
        .flat_map(|r| losses(r).into_iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.1;
    let panels: [(&Area<DB>, &str, std::ops::Range<f64>, bool); 2] = [
        (&left, "head test accuracy (%)", yr, true),
        (&right, "head training loss", 0.0..lmax, false),
    ];
    for (area, desc, range, is_acc) in panels {
        let mut chart = ChartBuilder::on(area)
            .caption(desc, (FONT, 18))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(0.5..epochs + 0.5, range)
            .map_err(perr)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .x_labels(epochs as usize + 2)
            .x_label_formatter(&integer_label)
            .label_style((FONT, 13))
            .draw()
            .map_err(perr)?;
        let mut labelled: Vec<&str> = Vec::new();
        for (r, (colour, label)) in rows.iter().zip(&styles) {
            let pts = if is_acc { tests(r) } else { losses(r) };
            let colour = *colour;
            line_once(&mut chart, pts.clone(), colour, label, &mut labelled)?;
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, colour.filled())))
                .map_err(perr)?;
        }
        if is_acc {
            legend(&mut chart, 12)?;
        }
    }
    Ok(())
}

/// Ticks of a log axis over `range`: labelled ones at 1, 2 and 5 times powers of ten (every
/// 1..9 multiple when that gives fewer than three), and light grid lines at every 1..9 multiple.
fn log_ticks(range: &std::ops::Range<f64>) -> (Vec<f64>, Vec<f64>) {
    let (lo, hi) = (range.start, range.end);
    if !(lo > 0.0 && hi > lo && hi.is_finite()) {
        return (Vec::new(), Vec::new());
    }
    let multiples = |mantissas: &[f64]| -> Vec<f64> {
        let mut out = Vec::new();
        for exp in lo.log10().floor() as i32..=hi.log10().ceil() as i32 {
            for m in mantissas {
                // Through a decimal string, so 0.2 is 0.2 and labels print short.
                let v: f64 = format!("{m}e{exp}").parse().expect("a number");
                if v >= lo && v <= hi {
                    out.push(v);
                }
            }
        }
        out
    };
    let all = multiples(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
    let bold = multiples(&[1.0, 2.0, 5.0]);
    if bold.len() >= 3 {
        (bold, all)
    } else {
        (all.clone(), all)
    }
}

/// A log axis tick label: plain decimals from 0.001 to 9999, else `2e6` style.
fn log_label(v: &f64) -> String {
    if *v >= 1e-3 && *v < 1e4 {
        let text = format!("{v:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:e}")
    }
}

/// Tick labels of an integer axis: whole numbers only.
fn integer_label(v: &f64) -> String {
    if (v - v.round()).abs() < 1e-6 {
        format!("{v:.0}")
    } else {
        String::new()
    }
}

/// Draws `pts` as a line of `colour` with a legend entry `label`, unless `labelled` already has one
/// (the runs of one configuration share an entry).
fn line_once<'a, 'l, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    pts: Vec<(f64, f64)>,
    colour: RGBColor,
    label: &'l str,
    labelled: &mut Vec<&'l str>,
) -> Result<()> {
    let series = chart
        .draw_series(LineSeries::new(pts, colour.stroke_width(2)))
        .map_err(perr)?;
    if !labelled.contains(&label) {
        labelled.push(label);
        series.label(label).legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
        });
    }
    Ok(())
}

/// Auxiliary test accuracy by boundary: the group mean as a line, each group as a dot.
fn units<DB: DrawingBackend>(root: &Area<DB>, runs: &Runs) -> Result<()> {
    let (rows, styles) = (runs.rows, runs.styles());
    root.fill(&WHITE).map_err(perr)?;
    let tests: Vec<Option<&groupwise::eval::EvalResult>> = rows
        .iter()
        .map(|r| r.metrics.iter().rev().find_map(|m| m.test.as_ref()))
        .collect();
    let depth = tests
        .iter()
        .map(|t| t.map_or(0, |t| t.units.len()))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let yr = accuracy_range(
        tests
            .iter()
            .flatten()
            .flat_map(|t| t.units.iter().flatten().map(|a| 100.0 * a)),
    );
    let mut chart = ChartBuilder::on(root)
        .caption(
            "Auxiliary classifiers: test accuracy by depth and group",
            (FONT, 22),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(0.5..depth + 0.5, yr)
        .map_err(perr)?;
    chart
        .configure_mesh()
        .x_desc("boundary k (1 = after the first module)")
        .y_desc("test accuracy (%)")
        .x_labels(depth as usize + 2)
        .x_label_formatter(&integer_label)
        .label_style((FONT, 14))
        .draw()
        .map_err(perr)?;
    let mut labelled: Vec<&str> = Vec::new();
    for (t, (colour, label)) in tests.iter().zip(&styles) {
        let Some(t) = t else { continue };
        if t.units.is_empty() {
            continue;
        }
        let colour = *colour;
        let means: Vec<(f64, f64)> = t
            .units
            .iter()
            .enumerate()
            .map(|(k, g)| {
                let m = g.iter().sum::<f64>() / g.len().max(1) as f64;
                ((k + 1) as f64, 100.0 * m)
            })
            .collect();
        line_once(&mut chart, means, colour, label, &mut labelled)?;
        let dots: Vec<(f64, f64)> = t
            .units
            .iter()
            .enumerate()
            .flat_map(|(k, g)| g.iter().map(move |a| ((k + 1) as f64, 100.0 * a)))
            .collect();
        chart
            .draw_series(
                dots.into_iter()
                    .map(|p| Circle::new(p, 4, colour.mix(0.7).filled())),
            )
            .map_err(perr)?;
    }
    legend(&mut chart, 12)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_axes_label_a_few_round_values_in_every_range() {
        // The MACs of the README's sweep: 1, 2 and 5 times powers of ten.
        let (bold, light) = log_ticks(&(1.5e6..8.6e7));
        assert_eq!(bold, vec![2e6, 5e6, 1e7, 2e7, 5e7]);
        assert_eq!(light.len(), 16);
        assert_eq!(
            bold.iter().map(log_label).collect::<Vec<_>>(),
            ["2e6", "5e6", "1e7", "2e7", "5e7"]
        );
        // Less than a decade (seconds per step): every multiple is labelled.
        let (bold, _) = log_ticks(&(0.17..0.9));
        assert_eq!(bold, vec![0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]);
        assert_eq!(log_label(&0.2), "0.2");
        assert_eq!(log_label(&3.0), "3");
        assert_eq!(log_label(&0.015), "0.015");
        // Degenerate ranges draw no ticks rather than panic.
        assert_eq!(log_ticks(&(0.0..1.0)), (vec![], vec![]));
        assert_eq!(log_ticks(&(2.0..2.0)), (vec![], vec![]));
    }
}
