//! A real run beside its simulation (`plan --simulate PROFILE --trace RUN_DIR`, `bench --parallel
//! --gantt`): the run's `trace.json` gives its placement, pipeline depth and epoch length; the
//! simulator runs the same from the profile's node costs; the two timelines' last steps and each
//! node's compute are set side by side, so a user sees where the model and the machine part.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};

use groupwise::parallel::{Topology, Trace};
use groupwise::sim::{simulate, Link, NodeCost, Prediction, Setup};
use groupwise::train::{RunDir, TraceFile};

use crate::report::gantt::{self, Panel};
use crate::stdout::Stdout;

/// A run and its simulation.
pub struct Against {
    /// The run's file.
    pub file: TraceFile,
    /// The run's timeline.
    pub trace: Trace,
    /// The simulated run.
    pub setup: Setup,
    /// What the simulator predicts for it.
    pub prediction: Prediction,
}

/// The trace of the run in `dir`; an error says why there is none.
pub fn read(dir: &Path) -> Result<TraceFile> {
    RunDir::new(dir).read_trace()?.with_context(|| {
        format!(
            "{} has no {}: it is written after each epoch of a run on worker threads or MPI \
                 ranks (--workers threads or --transport mpi; not --workers sequential)",
            dir.display(),
            RunDir::TRACE
        )
    })
}

/// Training seconds per step of `epoch` of the run in `dir` (its `metrics.jsonl`: the pipeline's
/// fill and drain and any measuring steps included), when the file holds that epoch.
pub fn epoch_step_seconds(dir: &Path, epoch: usize) -> Result<Option<f64>> {
    let log = RunDir::new(dir).read_metrics()?;
    Ok(log
        .epochs
        .iter()
        .rev()
        .find(|m| m.epoch == epoch && m.steps > 0)
        .map(|m| m.train_seconds / m.steps as f64))
}

/// Simulates the run of `file` (its placement, depth and epoch) from `costs`, measured at batch
/// `batch`; processes talk over `link`. The worker threads of a run on one process share `cores`
/// (default: the cores of the machine it ran on, when the file says); MPI ranks are taken to have
/// cores of their own.
pub fn against(
    topo: &Topology,
    costs: &[NodeCost],
    batch: i64,
    file: TraceFile,
    link: Link,
    cores: Option<usize>,
) -> Result<Against> {
    let trace = file
        .trace(topo)
        .map_err(|e| anyhow::anyhow!("{}: {e}", RunDir::TRACE))?;
    if file.batch_size as i64 != batch {
        bail!(
            "the run trained batches of {} images, the profile timed batches of {batch}: profile \
             with --batch-size {}",
            file.batch_size,
            file.batch_size
        );
    }
    if trace.intervals.is_empty() {
        bail!("{} holds no step", RunDir::TRACE);
    }
    let setup = Setup {
        depth: trace.depth.max(1),
        steps: file.steps.max(1),
        batch: batch as u64,
        cores: cores.or(file.cores.filter(|_| file.runtime == "threads")),
        threads_per_worker: trace.threads_per_worker.max(1),
        // A run's first epoch pays its nodes' first-use costs.
        cold: file.epoch == 1,
        ..Setup::placed(topo.clone(), costs.to_vec(), trace.workers.clone(), link)
    };
    let prediction = simulate(&setup).map_err(anyhow::Error::msg)?;
    Ok(Against {
        file,
        trace,
        setup,
        prediction,
    })
}

impl Against {
    /// The two timelines, the run's above, to `png`.
    pub fn draw(&self, png: &Path, topo: &Topology, title: &str) -> Result<()> {
        let rows = self.trace.workers.len();
        gantt::draw(
            png,
            topo,
            title,
            &[
                Panel {
                    label: format!(
                        "measured (epoch {}, {})",
                        self.file.epoch, self.file.runtime
                    ),
                    rows,
                    intervals: &self.trace.intervals,
                },
                Panel {
                    label: "simulated from the profile".into(),
                    rows,
                    intervals: &self.prediction.timeline,
                },
            ],
        )
    }

    /// Seconds per step over the last steps shown: (measured, simulated).
    pub fn step_seconds(&self) -> (f64, f64) {
        (
            gantt::step_seconds(&self.trace.intervals),
            gantt::step_seconds(&self.prediction.timeline),
        )
    }

    /// Measured vs simulated step (over the epoch's last steps, and over the whole epoch when
    /// `epoch_seconds` gives the run's training seconds per step), then every node's compute per
    /// step in the run vs the simulation and the profile.
    pub fn print(
        &self,
        out: &mut Stdout,
        topo: &Topology,
        epoch_seconds: Option<f64>,
    ) -> Result<()> {
        let (run, sim) = self.step_seconds();
        writeln!(
            out,
            "run: epoch {} ({} steps) on {}, {} workers, {} intra-op thread(s) each, pipeline depth \
             {}{}; the last steps of the epoch: {:.1} ms per step measured, {:.1} ms simulated \
             ({:+.1}%)",
            self.file.epoch,
            self.file.steps,
            self.file.runtime,
            self.trace.workers.len(),
            self.trace.threads_per_worker,
            self.trace.depth,
            match self.setup.cores {
                Some(c) => format!(", sharing {c} cores"),
                None => String::new(),
            },
            run * 1e3,
            sim * 1e3,
            100.0 * (sim - run) / run.max(1e-12)
        )?;
        if let Some(run) = epoch_seconds {
            let sim = self.prediction.step_seconds;
            writeln!(
                out,
                "the whole epoch (metrics.jsonl: training seconds / steps, the pipeline's fill and \
                 drain included): {:.1} ms per step measured, {:.1} ms simulated ({:+.1}%)",
                run * 1e3,
                sim * 1e3,
                100.0 * (sim - run) / run.max(1e-12)
            )?;
        }
        writeln!(
            out,
            "per node, compute per step over the run's traced steps, measured and simulated (a \
             compute sharing its core with others lasts longer than its profile):"
        )?;
        writeln!(
            out,
            "{:<8} {:>6} {:>9} {:>9} {:>11} {:>8}",
            "node", "worker", "run ms", "sim ms", "profile ms", "run/sim"
        )?;
        let (first, last) = self
            .trace
            .intervals
            .iter()
            .fold((usize::MAX, 0), |(a, b), i| (a.min(i.step), b.max(i.step)));
        let first = first.min(last);
        // The same steps of both: the run's traced ones (global step numbers) are the epoch's
        // last, the simulation counts the epoch's steps from 1.
        let sim_last = self.setup.steps;
        let sim_first = sim_last.saturating_sub(last - first);
        let per_step = |intervals: &[groupwise::parallel::Interval], id: usize, (a, b)| {
            let mine = intervals
                .iter()
                .filter(|i| i.node == id && (a..=b).contains(&i.step));
            let mut steps: Vec<usize> = mine.clone().map(|i| i.step).collect();
            steps.sort_unstable();
            steps.dedup();
            mine.map(|i| i.end - i.start).sum::<f64>() / steps.len().max(1) as f64
        };
        for (w, (_, ids)) in self.trace.workers.iter().enumerate() {
            for &id in ids {
                let run = per_step(&self.trace.intervals, id, (first, last));
                let sim = per_step(&self.prediction.timeline, id, (sim_first, sim_last));
                writeln!(
                    out,
                    "{:<8} {:>6} {:>9.2} {:>9.2} {:>11.2} {:>7.2}x",
                    topo.name(id).to_string(),
                    w,
                    run * 1e3,
                    sim * 1e3,
                    self.setup.costs[id].total() * 1e3,
                    run / sim.max(1e-12)
                )?;
            }
        }
        Ok(())
    }
}
