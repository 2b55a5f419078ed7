//! Reading run directories into report rows: a run's config, its metrics so far, its result when
//! finished, and its costs from the plan.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use groupwise::parallel::NodeTiming;
use groupwise::plan::PlanSpec;
use groupwise::train::{EpochMetrics, RunConfig, RunDir};

use crate::files;

/// Run directories named by `dirs`: each one that holds a `config.json`, else its subdirectories
/// that do.
pub(super) fn expand(dirs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for d in dirs {
        if RunDir::new(d).file(RunDir::CONFIG).exists() {
            out.push(d.clone());
            continue;
        }
        let entries = std::fs::read_dir(d)
            .with_context(|| format!("{} is not a run directory (no config.json)", d.display()))?;
        let mut subs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join(RunDir::CONFIG).exists())
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

/// Per-node times summed by node over the epochs of `metrics`: the slowest node's compute seconds per
/// step, and the CPU seconds per step of all nodes together (NaN when any entry lacks them: metrics
/// written before CPU time was measured read as 0). Both NaN without per-node times.
fn node_seconds(metrics: &[EpochMetrics]) -> (f64, f64) {
    let mut nodes: Vec<NodeTiming> = Vec::new();
    let mut cpu_known = true;
    for t in metrics.iter().flat_map(|m| &m.nodes) {
        cpu_known &= t.cpu_seconds > 0.0 || t.compute_seconds == 0.0;
        match nodes.iter_mut().find(|n| n.node == t.node) {
            Some(n) => n.add(t),
            None => nodes.push(t.clone()),
        }
    }
    if nodes.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let per_step = |n: &NodeTiming, s: f64| s / n.steps.max(1) as f64;
    let slowest = nodes
        .iter()
        .map(|n| per_step(n, n.compute_seconds))
        .fold(0.0, f64::max);
    let cpu = if cpu_known {
        nodes.iter().map(|n| per_step(n, n.cpu_seconds)).sum()
    } else {
        f64::NAN
    };
    (slowest, cpu)
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
    /// The slowest node's compute seconds per step (wall clock: forward, backward, update), over
    /// the logged epochs; NaN when the metrics have no per-node times.
    pub slowest_node_seconds: f64,
    /// CPU seconds per step of every node's worker thread together (intra-op helper threads not
    /// counted); NaN when an epoch's metrics lack them (written before they were measured).
    pub cpu_seconds: f64,
    /// How the nodes ran.
    pub runtime: String,
}

impl Row {
    /// Reads the run directory `dir` (a finished run, or one in progress). A last metrics line cut
    /// short (a run killed while writing it, or being written now) is skipped with a warning.
    pub fn read(dir: &Path) -> Result<Row> {
        let run = RunDir::new(dir);
        let config = run.read_config()?;
        let log = run.read_metrics()?;
        if let Some(line) = log.cut_short {
            eprintln!(
                "warning: {}: line {line} is cut short (the run stopped while writing it); skipped",
                run.file(RunDir::METRICS).display()
            );
        }
        let metrics = log.epochs;
        let summary = run.read_summary()?;
        let plan = config
            .declared_plan()
            .with_context(|| format!("{}: the run's plan", dir.display()))?;
        let latest = metrics.iter().rev().find_map(|m| m.test.clone());
        let test = summary.as_ref().map(|s| s.test.clone()).or(latest);
        let (steps, secs) = metrics.iter().fold((0usize, 0f64), |(n, t), m| {
            (n + m.steps, t + m.train_seconds)
        });
        let (slowest_node_seconds, cpu_seconds) = node_seconds(&metrics);
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
            slowest_node_seconds,
            cpu_seconds,
            runtime: summary.map(|s| s.runtime).unwrap_or_default(),
            config,
            metrics,
        })
    }

    /// Plan 1 with G=1: plain backpropagation, the default baseline.
    pub fn is_end_to_end(&self) -> bool {
        self.config.plan == PlanSpec::EndToEnd && self.config.groups == 1
    }

    /// [`PlanSpec::method`] (`e2e`, `DGL K=4`, `GN-DGL G=2 K=4`, `1A G=4`, explicit boundaries in
    /// brackets), with ` InfoPro` when it has the decoder loss.
    pub fn method(&self) -> String {
        let c = &self.config;
        let base = c.plan.method(c.groups);
        if c.loss.infopro.is_some() {
            format!("{base} InfoPro")
        } else {
            base
        }
    }

    /// Epochs done: the count when finished, else `done/planned`.
    pub(super) fn epochs(&self) -> String {
        if self.finished {
            format!("{}", self.metrics.len().max(self.config.epochs))
        } else {
            format!("{}/{}", self.metrics.len(), self.config.epochs)
        }
    }
}
