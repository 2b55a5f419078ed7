//! `groupwise plan --simulate PROFILE`: the plan's training step predicted on N workers from its
//! measured node costs ([`groupwise::sim`]).

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Result};

use groupwise::parallel::Topology;
use groupwise::plan::Plan;
use groupwise::sim::{simulate, Link, NodeCost, Prediction, Setup};

use crate::args::{PlanArgs, SimRuntime};
use crate::profile_file::{self, ProfileFile};
use crate::stdout::stdout;

/// MPI over shared memory, `LATENCY_US,GBYTES_PER_S`: the bandwidth at the low end of what the MPI
/// runs' per-node tables show here (2.1-3.5 GB/s from bytes sent over sending seconds, `bench
/// --parallel`); the latency is the progress thread's longest idle poll (1 ms).
pub const MPI_SHARED_MEMORY: &str = "1000,2";

/// Every node's cost in `file`, by node id of `topo`; an error naming the file when it profiles
/// another plan (a node missing, or one of other MACs: another architecture, plan or G).
pub fn node_costs(topo: &Topology, file: &ProfileFile, path: &Path) -> Result<Vec<NodeCost>> {
    let other = |why: String| {
        anyhow::anyhow!(
            "{} profiles plan {} with G={}, not this plan ({why}): profile this plan (groupwise plan \
             --profile --json with the same model flags)",
            path.display(),
            file.plan,
            file.groups
        )
    };
    if file.nodes.len() != topo.len() {
        return Err(other(format!(
            "{} nodes, this plan has {}",
            file.nodes.len(),
            topo.len()
        )));
    }
    (0..topo.len())
        .map(|id| {
            let name = topo.name(id);
            let n = file
                .nodes
                .iter()
                .find(|n| n.node == name)
                .ok_or_else(|| other(format!("it has no node {name}")))?;
            if n.macs != topo.macs(id) {
                return Err(other(format!(
                    "its node {name} has {} forward MACs, this plan's {}",
                    n.macs,
                    topo.macs(id)
                )));
            }
            Ok(NodeCost::from_profile(n))
        })
        .collect()
}

impl SimRuntime {
    /// `workers` as (processes, worker threads per process): one process of them all, or a process
    /// each.
    pub fn split(self, workers: usize) -> (usize, usize) {
        match self {
            SimRuntime::Threads => (1, workers),
            SimRuntime::Mpi => (workers, 1),
        }
    }
}

/// What one prediction is asked for.
pub struct Ask {
    /// Worker count.
    pub workers: usize,
    /// Threads or MPI.
    pub runtime: SimRuntime,
    /// Between processes.
    pub link: Link,
    /// Messages per channel.
    pub depth: usize,
    /// Steps in the segment.
    pub steps: usize,
    /// Worker speeds (empty: all 1; one value: all of them).
    pub speeds: Vec<f64>,
    /// Cores the workers share (`None`: each has its own), each computing worker using `threads`.
    pub cores: Option<usize>,
    /// Intra-op threads per worker (the profile's).
    pub threads: usize,
}

/// The setup of `ask` for `topo` with `costs` measured at batch `batch`.
pub fn setup(topo: &Topology, costs: &[NodeCost], batch: i64, ask: &Ask) -> Result<Setup> {
    let (processes, per_process) = ask.runtime.split(ask.workers);
    let mut s = Setup::new(
        topo.clone(),
        costs.to_vec(),
        processes,
        per_process,
        ask.link,
    );
    s.depth = ask.depth;
    s.steps = ask.steps;
    s.batch = batch as u64;
    s.cores = ask.cores;
    s.threads_per_worker = ask.threads;
    let n = s.workers.len();
    s.speed = match ask.speeds.as_slice() {
        [] => vec![1.0; n],
        [one] => vec![*one; n],
        many => {
            if many.len() < n {
                bail!(
                    "--speeds has {} values for {n} workers (one value applies to all)",
                    many.len()
                );
            }
            many[..n].to_vec()
        }
    };
    if s.speed.iter().any(|&v| !(v > 0.0 && v.is_finite())) {
        bail!("--speeds must be positive");
    }
    Ok(s)
}

/// Runs `plan --simulate`.
pub fn run(plan: &Plan, plan_name: &str, args: &PlanArgs, path: &Path) -> Result<()> {
    let file = profile_file::load(path, "--simulate").map_err(anyhow::Error::msg)?;
    let topo = Topology::new(plan);
    let costs = node_costs(&topo, &file, path)?;
    if args.pipeline_depth == 0 || args.sim_steps == 0 || args.cores == Some(0) {
        bail!("--pipeline-depth, --sim-steps and --cores must be at least 1");
    }
    let link = Link::parse(args.link.as_deref().unwrap_or(MPI_SHARED_MEMORY))
        .map_err(|e| anyhow::anyhow!("--link {e}"))?;
    if let Some(dir) = &args.trace {
        let trace = super::trace::read(dir)?;
        let run = super::trace::against(&topo, &costs, file.batch, trace, link, args.cores)?;
        if let Some(png) = &args.gantt {
            run.draw(png, &topo, plan_name)?;
            eprintln!("wrote {}", png.display());
        }
        let mut out = stdout();
        writeln!(
            out,
            "PREDICTED (simulation from {}: batch {}, {} intra-op thread(s) per worker) vs MEASURED \
             ({}): {plan_name}, {} nodes{}",
            path.display(),
            file.batch,
            file.threads,
            dir.display(),
            topo.len(),
            if run.setup.process.iter().any(|&p| p > 0) {
                format!("; link between processes {link}")
            } else {
                String::new()
            }
        )?;
        let epoch_seconds = super::trace::epoch_step_seconds(dir, run.file.epoch)?;
        return run.print(&mut out, &topo, epoch_seconds);
    }
    let counts = args
        .workers
        .clone()
        .unwrap_or_else(|| (0..9).map(|i| 1 << i).collect());
    if counts.contains(&0) {
        bail!("--workers: every count must be at least 1");
    }
    let asks: Vec<Ask> = counts
        .iter()
        .map(|&workers| Ask {
            workers,
            runtime: args.runtime,
            link,
            depth: args.pipeline_depth,
            steps: args.sim_steps,
            speeds: args.speeds.clone().unwrap_or_default(),
            cores: args.cores,
            threads: file.threads,
        })
        .collect();
    let mut rows = Vec::new();
    for ask in &asks {
        let s = setup(&topo, &costs, file.batch, ask)?;
        let p = simulate(&s).map_err(anyhow::Error::msg)?;
        rows.push((ask.workers, s, p));
    }
    if let (Some(png), Some((_, s, p))) = (&args.gantt, rows.first()) {
        crate::report::gantt::draw(
            png,
            &topo,
            plan_name,
            &[crate::report::gantt::Panel {
                label: "simulated".into(),
                rows: s.workers.len(),
                intervals: &p.timeline,
            }],
        )?;
        eprintln!("wrote {}", png.display());
    }
    let sequential: f64 = costs.iter().map(NodeCost::total).sum();
    let e2e = file.reference.as_ref().map(|r| r.seconds_per_step);
    let mut out = stdout();
    if args.json {
        let value: Vec<_> = rows
            .iter()
            .map(|(n, s, p)| {
                serde_json::json!({
                    "workers": n,
                    "workers_used": s.workers.len(),
                    "cores": s.cores,
                    "step_seconds": p.step_seconds,
                    "steady_step_seconds": p.steady_step_seconds,
                    "images_per_second": s.batch as f64 / p.steady_step_seconds,
                    "speedup_vs_end_to_end": e2e.map(|e| e / p.steady_step_seconds),
                    "speedup_vs_sequential": sequential / p.steady_step_seconds,
                    "comm_share": p.comm_share(),
                    "critical_node": topo.name(p.critical_node).to_string(),
                    "workers_detail": p.workers.iter().map(|w| serde_json::json!({
                        "nodes": w.nodes.iter().map(|&id| topo.name(id).to_string()).collect::<Vec<_>>(),
                        "process": w.process,
                        "busy_seconds": w.busy,
                        "wait_seconds": w.wait,
                        "comm_seconds": w.comm,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(());
    }
    let mut runtime = match args.runtime {
        SimRuntime::Threads => "worker threads of one process".to_string(),
        SimRuntime::Mpi => format!("a process per worker, link {link}"),
    };
    if let Some(c) = args.cores {
        runtime.push_str(&format!(
            "; all workers share {c} cores (busiest: wall time computing, shared time included)"
        ));
    }
    writeln!(
        out,
        "PREDICTED (simulation from {}: batch {}, {} intra-op thread(s) per worker): {plan_name}, {} \
         nodes; {runtime}; pipeline depth {}, {}-step segment",
        path.display(),
        file.batch,
        file.threads,
        topo.len(),
        args.pipeline_depth,
        args.sim_steps
    )?;
    writeln!(
        out,
        "steady: seconds per step once the pipeline is full; run: over the whole segment (fill and \
         drain included); vs e2e: over the end-to-end step on one worker ({}); vs seq: over every \
         node in turn on one worker ({:.1} ms)",
        e2e.map_or("not in the profile".into(), |e| format!("{:.1} ms", e * 1e3)),
        sequential * 1e3
    )?;
    writeln!(
        out,
        "{:>7} {:>6} {:>10} {:>9} {:>8} {:>7} {:>7} {:>8} {:>6}  critical node",
        "workers", "used", "steady ms", "run ms", "img/s", "vs e2e", "vs seq", "busiest", "comm%"
    )?;
    for (n, s, p) in &rows {
        let busiest = p.workers.iter().map(|w| w.busy).fold(0.0, f64::max);
        writeln!(
            out,
            "{:>7} {:>6} {:>10.1} {:>9.1} {:>8.0} {:>7} {:>6.2}x {:>7.0}% {:>5.1}%  {}",
            n,
            s.workers.len(),
            p.steady_step_seconds * 1e3,
            p.step_seconds * 1e3,
            s.batch as f64 / p.steady_step_seconds,
            e2e.map_or("-".into(), |e| format!("{:.2}x", e / p.steady_step_seconds)),
            sequential / p.steady_step_seconds,
            100.0 * busiest / p.segment_seconds,
            100.0 * p.comm_share(),
            topo.name(p.critical_node)
        )?;
    }
    if let [(_, _, p)] = rows.as_slice() {
        per_worker(&mut out, &topo, p)?;
    }
    Ok(())
}

fn per_worker(out: &mut crate::stdout::Stdout, topo: &Topology, p: &Prediction) -> Result<()> {
    writeln!(out, "per worker, share of the segment:")?;
    writeln!(
        out,
        "{:>6} {:>7} {:>6} {:>6} {:>6}  nodes",
        "worker", "process", "busy", "wait", "comm"
    )?;
    let pct = |s: f64| 100.0 * s / p.segment_seconds;
    for (i, w) in p.workers.iter().enumerate() {
        let names: Vec<String> = w
            .nodes
            .iter()
            .map(|&id| topo.name(id).to_string())
            .collect();
        writeln!(
            out,
            "{:>6} {:>7} {:>5.0}% {:>5.0}% {:>5.1}%  {}",
            i,
            w.process,
            pct(w.busy),
            pct(w.wait),
            pct(w.comm),
            names.join(" ")
        )?;
    }
    Ok(())
}
