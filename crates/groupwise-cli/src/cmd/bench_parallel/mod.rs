//! `groupwise bench --parallel`: the same short training run (ResNet-32, synthetic 32x32x3 data, 10
//! classes) as the sequential path, as pipelined worker threads and as MPI ranks, each a `groupwise
//! train` child process; step time from the run's metrics, the per-node compute / CPU / wait /
//! communication split with GMAC/s, and the ideal speed-up of the workers twice: from the plan's MAC
//! balance and from node step times measured by `groupwise plan --profile` children (W copies at
//! once: the runs' load; one before the runs, which place their nodes by it unless `--placement`
//! says otherwise, and one after: each node's mean of the two, so that a machine whose speed drifts
//! during the round is seen at both ends), with each runtime's efficiency against the latter; and
//! the simulator's prediction of every run from those profiles beside what the run measured (`plan
//! --simulate`'s model, validated here). `--rounds R` does all of it R times, configurations interleaved, and `tables.rs` reports
//! medians over the rounds of what each round measured against itself.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use groupwise::model::Arch;
use groupwise::parallel::{
    cores, default_threads_per_worker, Layout, NodeTiming, Placement, Runtime, Topology,
};
use groupwise::plan::{AuxInput, Plan};
use groupwise::sim::{Link, NodeCost};
use groupwise::train::{EpochMetrics, RunDir, TraceFile};

use crate::args::BenchArgs;
use crate::cmd::simulate;
use crate::cmd::trace::{self, Against};
use crate::mpiexec;
use crate::profile_file::ProfileFile;
use crate::stdout::stdout;

mod tables;

/// What one training child measured.
struct Measured {
    /// Training seconds per step (pipeline fill and drain included).
    step_seconds: f64,
    /// Where each node's time went.
    nodes: Vec<NodeTiming>,
    /// The run's last steps and placement (threads and MPI runs).
    trace: Option<TraceFile>,
}

/// The flags that make `groupwise train` and `groupwise plan` build ResNet-32 on 32x32x3 images
/// with 10 classes and the plan `k` x `g`.
fn model_args(k: &str, g: &str) -> Vec<String> {
    [
        "--preset",
        "smoke",
        "--depth",
        "32",
        "--widths",
        "16,16,32,64",
        "--plan",
        k,
        "--groups",
        g,
    ]
    .map(String::from)
    .to_vec()
}

fn train_child(
    a: &BenchArgs,
    (k, g): (&str, &str),
    mode: &[String],
    launcher: Option<(&Path, usize)>,
    dir: &Path,
) -> Result<Measured> {
    let exe = std::env::current_exe().context("own executable")?;
    let steps = a.warmup + a.steps;
    let images = a.batch as usize * steps;
    let mut cmd = match launcher {
        Some((mpirun, ranks)) => {
            let mut c = Command::new(mpirun);
            c.args(["-np", &ranks.to_string()]);
            if a.mpi_tcp {
                c.args(["--mca", "btl", "tcp,self"]);
            }
            c.arg(&exe);
            // The container settings, unless the environment has its own.
            for (k, v) in mpiexec::CONTAINER_ENV {
                if std::env::var_os(k).is_none() {
                    c.env(k, v);
                }
            }
            c
        }
        None => Command::new(&exe),
    };
    let _ = std::fs::remove_dir_all(dir);
    cmd.arg("train")
        .args(model_args(k, g))
        .args(["--synthetic", &format!("32,3,10,{images},{}", a.batch)])
        .args(["--epochs", "1", "--no-augment"])
        .args(["--batch-size", &a.batch.to_string()])
        .args(["--eval-batch-size", &a.batch.to_string(), "--quiet"])
        .args(["--run-dir", &dir.display().to_string()])
        .args(mode);
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    let path = dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path)?;
    let m: EpochMetrics = serde_json::from_str(text.lines().last().unwrap_or_default())
        .with_context(|| format!("{}: the last line", path.display()))?;
    let trace = RunDir::new(dir).read_trace()?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(Measured {
        step_seconds: m.train_seconds / m.steps as f64,
        nodes: m.nodes,
        trace,
    })
}

/// Every node's step timed on one worker thread with `threads` intra-op threads (what each worker of
/// the runs has), `copies` copies at once (the load of the run's workers), by a `groupwise plan
/// --profile --json` child; the profile is also written to `path` for the runs' `--placement`.
fn profile_child(
    a: &BenchArgs,
    (k, g): (&str, &str),
    (threads, copies): (usize, usize),
    path: &Path,
) -> Result<ProfileFile> {
    let exe = std::env::current_exe().context("own executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg("plan")
        .args(model_args(k, g))
        .args([
            "--in-channels",
            "3",
            "--image-size",
            "32",
            "--classes",
            "10",
        ])
        .args(["--profile", "--json", "--no-reference"])
        .args(["--threads", &threads.to_string()])
        .args(["--copies", &copies.to_string()])
        .args(["--batch", &a.batch.to_string()])
        .args(["--steps", &a.steps.to_string()])
        .args(["--warmup", &a.warmup.to_string()]);
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    std::fs::write(path, &out.stdout).with_context(|| format!("{}", path.display()))?;
    serde_json::from_slice(&out.stdout).with_context(|| format!("{cmd:?}: not a profile"))
}

/// `mpiexec` when this binary can run on MPI ranks.
fn launcher_path() -> Option<PathBuf> {
    if !cfg!(feature = "mpi") {
        return None;
    }
    mpiexec::find()
}

/// Ideal speed-up of `workers` worker threads over one: the sum of `costs` (one per node) over the
/// busiest worker's sum, the nodes cut into contiguous runs as the runtime cuts them under
/// `placement` ([`Layout`]).
fn ideal(plan: &Plan, placement: Placement, costs: &[f64], workers: usize) -> Result<f64> {
    let runtime = Runtime {
        worker_threads: Some(workers),
        placement,
        ..Runtime::default()
    };
    let layout = Layout::new(plan, &runtime, tch::Device::Cpu, 1, 0, 1)?;
    let busiest = layout
        .local_workers()
        .iter()
        .map(|ids| ids.iter().map(|&id| costs[id]).sum::<f64>())
        .fold(0.0, f64::max);
    Ok(costs.iter().sum::<f64>() / busiest)
}

/// The ideal speed-up of `plan` on `workers` workers from forward MACs (nodes cut by MACs).
fn ideal_macs(plan: &Plan, workers: usize) -> Result<f64> {
    let topo = Topology::new(plan);
    let macs: Vec<f64> = (0..topo.len()).map(|id| topo.macs(id) as f64).collect();
    ideal(plan, Placement::Macs, &macs, workers)
}

/// The ideal speed-up of `plan` on `workers` workers from measured seconds per step `seconds`
/// (nodes cut by those).
fn ideal_time(plan: &Plan, seconds: &[f64], workers: usize) -> Result<f64> {
    let topo = Topology::new(plan);
    let given = (0..topo.len())
        .map(|id| (topo.name(id), seconds[id]))
        .collect();
    ideal(plan, Placement::Given(given), seconds, workers)
}

/// One configuration: what every round measured.
struct Config {
    name: String,
    topo: Topology,
    /// Ideal speed-up from forward MACs (the same every round).
    ideal_macs: f64,
    rounds: Vec<Round>,
}

/// One round of a configuration: its profiles, its runs and their predictions.
struct Round {
    /// Seconds per step of every node alone: the mean of its profile before the runs and after.
    alone: Vec<f64>,
    /// The profile after the runs over the one before, minus 1 (sums over the nodes): how far the
    /// machine's speed moved during the round.
    drift: f64,
    seq: Measured,
    seq1: Measured,
    threads: Measured,
    mpi: Option<Measured>,
    /// Ideal speed-up from the profiled node times.
    ideal_time: f64,
    /// The simulator's predictions of the runs ([`groupwise::sim`]).
    predicted: Predicted,
}

/// The simulator's predictions of the threads run and the MPI run.
struct Predicted {
    threads: Prediction,
    mpi: Option<Prediction>,
}

/// Seconds per step of one run, predicted and measured.
#[derive(Clone, Copy)]
struct Prediction {
    /// Over the whole run, from the profile.
    from_profile: f64,
    /// Over the whole run, from the run's own node times (the schedule alone).
    from_run: f64,
    /// Over the run's last 3 steps (its trace): (measured, predicted from the profile); the warm-up
    /// steps, which the profile leaves out, are not in these.
    last: (f64, f64),
}

/// Each node's cost, phase by phase, as the mean of two profiles of it.
fn mean_costs(a: &[NodeCost], b: &[NodeCost]) -> Vec<NodeCost> {
    a.iter()
        .zip(b)
        .map(|(a, b)| NodeCost {
            trunk: (a.trunk + b.trunk) / 2.0,
            classifier: (a.classifier + b.classifier) / 2.0,
            backward: (a.backward + b.backward) / 2.0,
            update: (a.update + b.update) / 2.0,
            warmup: (a.warmup + b.warmup) / 2.0,
        })
        .collect()
}

/// MPI over TCP on the loopback, `LATENCY_US,GBYTES_PER_S`: a conservative bound (the MPI runs'
/// per-node tables here show 1.3-2.5 GB/s from bytes sent over sending seconds); the latency is the
/// progress thread's longest idle poll.
pub const MPI_TCP: &str = "1000,0.5";

/// The run `m` (its placement, depth and steps, from its trace) simulated with every node costing
/// `costs`; processes talk over `link`.
fn predict(
    a: &BenchArgs,
    topo: &Topology,
    costs: &[NodeCost],
    m: &Measured,
    link: Link,
) -> Result<Against> {
    let file = m.trace.clone().context("the run wrote no trace.json")?;
    trace::against(topo, costs, a.batch, file, link, None)
}

/// `costs` with every node's total set to its compute per step in the run `m` (the phases in the
/// profile's proportions): the simulator fed what the run's nodes took, which separates its schedule
/// from the profile's costs.
fn as_in_run(topo: &Topology, costs: &[NodeCost], m: &Measured) -> Vec<NodeCost> {
    (0..topo.len())
        .map(|id| {
            let c = costs[id];
            let name = topo.name(id).to_string();
            let Some(t) = m.nodes.iter().find(|t| t.node == name) else {
                return c;
            };
            let f = t.compute_seconds / t.steps.max(1) as f64 / c.total().max(1e-12);
            NodeCost {
                trunk: c.trunk * f,
                classifier: c.classifier * f,
                backward: c.backward * f,
                update: c.update * f,
                // The run's mean compute already holds its first steps.
                warmup: 0.0,
            }
        })
        .collect()
}

/// What every round of every configuration shares.
struct Bench<'a> {
    a: &'a BenchArgs,
    /// Workers W of the threads and MPI runs.
    workers: usize,
    /// `mpiexec`, when this binary runs on MPI ranks.
    launcher: Option<PathBuf>,
    /// The link the MPI runs' predictions assume.
    link: Link,
    /// Where the children's run directories and profiles go.
    scratch: PathBuf,
}

impl Bench<'_> {
    /// Profiles `plan` (`k` x `g`) and runs it sequentially, on worker threads and on MPI ranks;
    /// `draw` writes the `--gantt` charts (the last round's).
    fn round(&self, (k, g): (&str, &str), plan: &Plan, draw: bool) -> Result<Round> {
        let (a, workers) = (self.a, self.workers);
        let topo = Topology::new(plan);
        eprintln!("K={k} G={g}: every node's step (plan --profile) ...");
        // A plan with fewer nodes than workers runs fewer, each with more intra-op threads.
        let tpw = default_threads_per_worker(workers.min(topo.len()));
        let busy = workers.min(topo.len());
        // OpenMPI binds each rank to a core when there are at most 2 of them (its default), so a
        // rank's nodes are profiled on one intra-op thread whatever the rank sets.
        let rank_threads = 1;
        let rank_apart = self.launcher.is_some() && tpw != rank_threads;
        // Node costs for the threads runs and (when they differ) for the MPI ranks, profiled now;
        // `when` names the files.
        let profile = |when: &str| -> Result<(PathBuf, Vec<NodeCost>, Option<Vec<NodeCost>>)> {
            let path = self.scratch.join(format!("profile-{k}-{g}-{when}.json"));
            let costs =
                simulate::node_costs(&topo, &profile_child(a, (k, g), (tpw, busy), &path)?, &path)?;
            let rank = if rank_apart {
                let p = self
                    .scratch
                    .join(format!("profile-{k}-{g}-{when}-rank.json"));
                let file = profile_child(a, (k, g), (rank_threads, busy), &p)?;
                Some(simulate::node_costs(&topo, &file, &p)?)
            } else {
                None
            };
            Ok((path, costs, rank))
        };
        let (profile_path, before, rank_before) = profile("before")?;
        let child = |what: &str, mode: &[&str], launcher: Option<(&Path, usize)>| {
            eprintln!("K={k} G={g}: {what} ...");
            let mode: Vec<String> = mode.iter().map(|s| s.to_string()).collect();
            train_child(a, (k, g), &mode, launcher, &self.scratch.join(what))
        };
        let w = workers.to_string();
        let seq = child(
            "sequential",
            &["--workers", "sequential", "--threads", &w],
            None,
        )?;
        let seq1 = child(
            "sequential-1",
            &["--workers", "sequential", "--threads", "1"],
            None,
        )?;
        let spec = match &a.placement {
            Some(p) => p.spec.clone(),
            None => profile_path.display().to_string(),
        };
        let place = ["--placement", spec.as_str()];
        let threads = child(
            "threads",
            &[
                &["--workers", "threads", "--worker-threads", &w],
                &place[..],
            ]
            .concat(),
            None,
        )?;
        let ranks = workers.min(topo.len());
        let mpi = match &self.launcher {
            Some(m) => Some(child(
                "mpi",
                &[&["--transport", "mpi", "--worker-threads", "1"], &place[..]].concat(),
                Some((m, ranks)),
            )?),
            None => None,
        };
        // The machine's speed drifts: the profile again after the runs, and each node's mean of
        // the two is what the ideal and the predictions use (the runs were placed by the first).
        eprintln!("K={k} G={g}: every node's step again, after the runs (plan --profile) ...");
        let (_, after, rank_after) = profile("after")?;
        let sum = |c: &[NodeCost]| c.iter().map(NodeCost::total).sum::<f64>();
        let drift = sum(&after) / sum(&before) - 1.0;
        let costs = mean_costs(&before, &after);
        let rank_costs = match (rank_before, rank_after) {
            (Some(b), Some(a)) => mean_costs(&b, &a),
            _ => costs.clone(),
        };
        let alone: Vec<f64> = costs.iter().map(NodeCost::total).collect();
        let ideal_time = ideal_time(plan, &alone, workers)?;
        // Each run simulated as it was placed (its trace), from the profile and from its own node
        // times.
        let both =
            |costs: &[NodeCost], m: &Measured, link: Link, mode: &str| -> Result<Prediction> {
                let from_profile = predict(a, &topo, costs, m, link)?;
                if let (Some(dir), true) = (&a.gantt, draw) {
                    let png = dir.join(format!("gantt-K{k}-G{g}-{mode}.png"));
                    from_profile.draw(&png, &topo, &format!("ResNet-32 K={k} G={g} ({mode})"))?;
                    eprintln!("wrote {}", png.display());
                }
                let from_run = predict(a, &topo, &as_in_run(&topo, costs, m), m, link)?;
                Ok(Prediction {
                    from_profile: from_profile.prediction.step_seconds,
                    from_run: from_run.prediction.step_seconds,
                    last: from_profile.step_seconds(),
                })
            };
        let predicted = Predicted {
            threads: both(&costs, &threads, Link::IN_PROCESS, "threads")?,
            mpi: match &mpi {
                Some(m) => Some(both(&rank_costs, m, self.link, "mpi")?),
                None => None,
            },
        };
        Ok(Round {
            alone,
            drift,
            seq,
            seq1,
            threads,
            mpi,
            ideal_time,
            predicted,
        })
    }
}

/// Runs `bench --parallel` with `rounds` rounds (each configuration profiled and run again in
/// each, configurations interleaved).
pub fn run(a: &BenchArgs, rounds: usize) -> Result<()> {
    let cores = cores();
    let workers = a.worker_threads.unwrap_or(cores).max(1);
    let names = a
        .configs
        .clone()
        .unwrap_or_else(|| vec!["1:2".into(), "2:1".into(), "2:2".into()]);
    let mut configs = Vec::new();
    let mut plans = Vec::new();
    for c in &names {
        let (k, g) = c
            .split_once(':')
            .with_context(|| format!("--configs entry '{c}' is not K:G"))?;
        let groups: i64 = g.parse().with_context(|| format!("bad G in '{c}'"))?;
        let plan = Plan::new(Arch::resnet32(3, 32, 10), k, groups, AuxInput::StopGradient)
            .with_context(|| format!("--configs entry '{c}'"))?;
        configs.push(Config {
            name: c.clone(),
            ideal_macs: ideal_macs(&plan, workers)?,
            topo: Topology::new(&plan),
            rounds: Vec::new(),
        });
        plans.push(((k.to_string(), g.to_string()), plan));
    }
    let launcher = launcher_path();
    if launcher.is_none() {
        eprintln!("note: no MPI column (build with --features mpi and put mpiexec on PATH)");
    }
    let link_spec = a.link.clone().unwrap_or_else(|| {
        if a.mpi_tcp {
            MPI_TCP
        } else {
            simulate::MPI_SHARED_MEMORY
        }
        .to_string()
    });
    let link = Link::parse(&link_spec).map_err(|e| anyhow::anyhow!("--link {e}"))?;
    if let Some(dir) = &a.gantt {
        std::fs::create_dir_all(dir).with_context(|| format!("--gantt {}", dir.display()))?;
    }
    let scratch = std::env::temp_dir().join(format!("groupwise-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).with_context(|| format!("{}", scratch.display()))?;
    let bench = Bench {
        a,
        workers,
        launcher,
        link,
        scratch,
    };
    for round in 1..=rounds {
        for (config, ((k, g), plan)) in configs.iter_mut().zip(&plans) {
            let r = bench.round((k, g), plan, round == rounds)?;
            eprintln!("round {round}/{rounds}: {}: {}", config.name, r.summary());
            config.rounds.push(r);
        }
    }
    let _ = std::fs::remove_dir_all(&bench.scratch);
    let setting = tables::Setting {
        batch: a.batch,
        steps: a.warmup + a.steps,
        warmup: a.warmup,
        rounds,
        workers,
        cores,
        mpi_tcp: a.mpi_tcp,
        placement: a.placement.as_ref().map(|p| p.spec.clone()),
        link: link_spec,
    };
    let mut out = stdout();
    tables::speedups(&mut out, &setting, &configs)?;
    writeln!(out)?;
    tables::predictions(&mut out, &setting, &configs)?;
    writeln!(out)?;
    tables::per_node(&mut out, &setting, &configs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// K=2, G=1: nodes m0.g0, m1.g0, head.
    fn dgl2() -> Plan {
        Plan::new(Arch::resnet32(3, 32, 10), "2", 1, AuxInput::StopGradient).unwrap()
    }

    #[test]
    fn ideal_from_measured_times_is_the_total_over_the_busiest_worker() {
        let plan = dgl2();
        assert_eq!(Topology::new(&plan).len(), 3);
        // Two workers: m0.g0 alone (3 s), m1.g0 and the head together (1 + 1 s): 5 / 3.
        let time = ideal_time(&plan, &[3.0, 1.0, 1.0], 2).unwrap();
        assert!((time - 5.0 / 3.0).abs() < 1e-12, "{time}");
        // The heavy node last: m0.g0 and m1.g0 together (2 s), the head alone (4 s): 6 / 4.
        let time = ideal_time(&plan, &[1.0, 1.0, 4.0], 2).unwrap();
        assert!((time - 1.5).abs() < 1e-12, "{time}");
        // One worker: no speed-up; a worker per node: the total over the largest node.
        assert!((ideal_time(&plan, &[3.0, 1.0, 1.0], 1).unwrap() - 1.0).abs() < 1e-12);
        assert!((ideal_time(&plan, &[3.0, 1.0, 1.0], 3).unwrap() - 5.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn ideal_from_macs_cuts_by_macs_whatever_the_times() {
        let plan = dgl2();
        let topo = Topology::new(&plan);
        let macs: Vec<f64> = (0..3).map(|id| topo.macs(id) as f64).collect();
        // The better of the two contiguous cuts into two workers.
        let by_macs = (1..3)
            .map(|split| {
                let (a, b) = macs.split_at(split);
                macs.iter().sum::<f64>() / a.iter().sum::<f64>().max(b.iter().sum())
            })
            .fold(0.0, f64::max);
        let m = ideal_macs(&plan, 2).unwrap();
        assert!((m - by_macs).abs() < 1e-9, "{m} vs {by_macs}");
    }
}
