//! `groupwise plan --search DIR`: every configuration profiled in DIR simulated on N workers, ranked
//! by predicted step time, with its costs per node and the Pareto front; with `--accuracy`, measured
//! accuracy beside it and the fastest configuration above a target.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use groupwise::parallel::{cores, Topology};
use groupwise::plan::{AuxInput, Plan, PlanSpec};
use groupwise::sim::{simulate, Link, NodeCost, Setup};

use crate::args::{PlanArgs, SimRuntime};
use crate::profile_file::{self, ProfileFile};
use crate::report::speedup::Curve;
use crate::stdout::stdout;

use super::simulate::{node_costs, MPI_SHARED_MEMORY};

/// One configuration's prediction and costs.
struct Candidate {
    method: String,
    plan: String,
    groups: i64,
    aux: AuxInput,
    /// Predicted seconds per step, pipeline full, with the better placement.
    step: f64,
    /// Which placement won.
    placed_by: &'static str,
    /// Largest forward MACs per image of a node (the paper's figure conventions).
    max_macs: u64,
    /// Largest parameter count of a node.
    max_params: u64,
    /// Largest memory of a node, estimated (bytes).
    max_memory: f64,
    /// Mean head accuracy of its runs in `--accuracy` (a fraction).
    accuracy: Option<f64>,
    pareto: bool,
}

/// Every profile in `dir`, sorted by file name.
fn profiles(dir: &Path) -> Result<Vec<(PathBuf, ProfileFile)>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("--search {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        bail!(
            "--search {}: no profiles (*.json written by `groupwise plan --profile --json`; \
             scripts/profile_grid.sh writes ResNet-32's grid)",
            dir.display()
        );
    }
    paths
        .into_iter()
        .map(|p| {
            let f = profile_file::load(&p, "--search").map_err(anyhow::Error::msg)?;
            Ok((p, f))
        })
        .collect()
}

/// Bytes a node holds during a step, estimated: weights, gradients and momentum (float32), and the
/// activations its backward pass keeps (about 3 tensors of the output per convolution: its output,
/// the batch norm's and the ReLU's; 2 convolutions per block).
fn node_memory(plan: &Plan, layers: &[(usize, usize)], params: u64, batch: f64) -> f64 {
    let specs = plan.arch.layers();
    let bps = plan.arch.blocks_per_stage;
    let activations: f64 = layers
        .iter()
        .map(|&(stage, block)| {
            let (position, convs) = match stage {
                0 => (0, 1.0),
                s => (1 + (s - 1) * bps + block, 2.0),
            };
            let l = &specs[position];
            let elems = (l.out_channels / plan.groups * l.out_size * l.out_size) as f64;
            3.0 * convs * elems * batch * 4.0
        })
        .sum();
    12.0 * params as f64 + activations
}

/// Mean head accuracy per (plan, groups, aux input name) in a report's `results.csv`.
fn accuracies(path: &Path) -> Result<BTreeMap<(String, i64, String), f64>> {
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("--accuracy {}", path.display()))?;
    let headers = reader.headers()?.clone();
    let col = |name: &str| {
        headers.iter().position(|h| h == name).with_context(|| {
            format!(
                "--accuracy {}: no column '{name}' (expected a results.csv written by groupwise \
                 report)",
                path.display()
            )
        })
    };
    let (plan, groups, aux, head) = (
        col("plan")?,
        col("groups")?,
        col("aux_input")?,
        col("head_accuracy")?,
    );
    let mut sums: BTreeMap<(String, i64, String), (f64, usize)> = BTreeMap::new();
    for (line, record) in reader.records().enumerate() {
        let r = record.with_context(|| format!("--accuracy {}", path.display()))?;
        let bad = || format!("--accuracy {}: row {}", path.display(), line + 2);
        let g: i64 = r[groups].parse().with_context(bad)?;
        let Ok(acc) = r[head].parse::<f64>() else {
            continue; // a run without an accuracy yet ("-")
        };
        let e = sums
            .entry((r[plan].to_string(), g, r[aux].to_string()))
            .or_default();
        e.0 += acc;
        e.1 += 1;
    }
    Ok(sums
        .into_iter()
        .map(|(k, (s, n))| (k, s / n as f64))
        .collect())
}

/// Runs `plan --search`: `base` gives the architecture (and the aux input of profiles that do not
/// record theirs).
pub fn run(base: &Plan, args: &PlanArgs, dir: &Path) -> Result<()> {
    let started = std::time::Instant::now();
    let link = Link::parse(args.link.as_deref().unwrap_or(MPI_SHARED_MEMORY))
        .map_err(|e| anyhow::anyhow!("--link {e}"))?;
    if args.pipeline_depth == 0 || args.sim_steps == 0 || args.cores == Some(0) {
        bail!("--pipeline-depth, --sim-steps and --cores must be at least 1");
    }
    let counts = args.workers.clone().unwrap_or_else(|| vec![cores()]);
    if counts.contains(&0) {
        bail!("--workers: every count must be at least 1");
    }
    let accuracy = args.accuracy.as_deref().map(accuracies).transpose()?;
    let profiles = profiles(dir)?;
    let prepared = profiles
        .iter()
        .map(|(path, file)| Prepared::new(base, path, file))
        .collect::<Result<Vec<_>>>()?;
    // End-to-end's step: its own profile when the directory has one (then end-to-end's speed-up on
    // one worker is exactly 1), else a profile's reference.
    let own = prepared
        .iter()
        .find(|c| c.is_end_to_end())
        .map(|c| c.costs.iter().map(NodeCost::total).sum::<f64>());
    let e2e = own.or_else(|| {
        profiles
            .iter()
            .find_map(|(_, f)| f.reference.as_ref().map(|r| r.seconds_per_step))
    });
    let mut out = stdout();
    for &workers in &counts {
        let mut found = Vec::new();
        for c in &prepared {
            let (step, placed_by) = c.best(workers, args, link)?;
            let plan = &c.plan;
            let key = (c.spec.to_string(), plan.groups, plan.aux_input.name());
            found.push(Candidate {
                method: c.spec.method(plan.groups),
                plan: c.spec.to_string(),
                groups: plan.groups,
                aux: plan.aux_input,
                step,
                placed_by,
                max_macs: plan.figure_max_node_macs(),
                max_params: c.max_params,
                max_memory: c.max_memory,
                accuracy: accuracy.as_ref().and_then(|a| a.get(&key).copied()),
                pareto: false,
            });
        }
        mark_pareto(&mut found);
        found.sort_by(|a, b| a.step.total_cmp(&b.step));
        print(&mut out, args, workers, e2e, &found)?;
    }
    eprintln!(
        "searched {} configurations x {} worker count(s) in {:.2} s",
        profiles.len(),
        counts.len(),
        started.elapsed().as_secs_f64()
    );
    if let Some(png) = &args.plot {
        plot(png, &prepared, args, link, e2e)?;
        eprintln!("wrote {}", png.display());
    }
    Ok(())
}

/// One profiled configuration, ready to simulate.
struct Prepared {
    spec: PlanSpec,
    plan: Plan,
    topo: Topology,
    costs: Vec<NodeCost>,
    batch: i64,
    /// Intra-op threads per worker in the profile (what a computing worker keeps busy of shared
    /// cores).
    threads: usize,
    /// Largest parameter count of a node.
    max_params: u64,
    /// Largest memory of a node, estimated (bytes).
    max_memory: f64,
}

impl Prepared {
    fn new(base: &Plan, path: &Path, file: &ProfileFile) -> Result<Prepared> {
        let aux = file.aux_input.unwrap_or(base.aux_input);
        let spec: PlanSpec = file
            .plan
            .parse()
            .map_err(|e| anyhow::anyhow!("{}: plan '{}': {e}", path.display(), file.plan))?;
        let plan = Plan::from_spec(base.arch.clone(), &spec, file.groups, aux)
            .with_context(|| format!("{}", path.display()))?;
        let topo = Topology::new(&plan);
        let costs = node_costs(&topo, file, path)?;
        let nodes = plan.nodes();
        let max_params = nodes.iter().map(|n| n.total().params).max().unwrap_or(0);
        let max_memory = nodes
            .iter()
            .map(|n| node_memory(&plan, &n.layers, n.total().params, file.batch as f64))
            .fold(0.0, f64::max);
        Ok(Prepared {
            spec,
            plan,
            topo,
            costs,
            batch: file.batch,
            threads: file.threads,
            max_params,
            max_memory,
        })
    }

    /// Whether this is the end-to-end network (one module, G = 1).
    fn is_end_to_end(&self) -> bool {
        self.spec == PlanSpec::EndToEnd && self.plan.groups == 1
    }

    /// The predicted steady step on `workers` workers with the nodes placed by measured time and by
    /// MACs, the better of the two and which it was; with `--cores` on worker threads, also train's
    /// default runtime (a worker thread per node, whatever `workers` is) sharing those cores.
    fn best(&self, workers: usize, args: &PlanArgs, link: Link) -> Result<(f64, &'static str)> {
        let topo = &self.topo;
        let totals: Vec<f64> = self.costs.iter().map(NodeCost::total).collect();
        let macs: Vec<f64> = (0..topo.len()).map(|id| topo.macs(id) as f64).collect();
        let split = args.runtime.split(workers);
        let mut candidates = vec![("time", &totals, split), ("MACs", &macs, split)];
        if args.cores.is_some() && args.runtime == SimRuntime::Threads {
            candidates.push(("node", &totals, (1, topo.len())));
        }
        let mut best: Option<(f64, &'static str)> = None;
        for (by, weights, split) in candidates {
            let s = Setup {
                depth: args.pipeline_depth,
                steps: args.sim_steps,
                batch: self.batch as u64,
                cores: args.cores,
                threads_per_worker: self.threads,
                ..Setup::placed_by(topo.clone(), self.costs.clone(), weights, split, link)
            };
            let step = simulate(&s)
                .map_err(anyhow::Error::msg)?
                .steady_step_seconds;
            if best.is_none_or(|(b, _)| step < b) {
                best = Some((step, by));
            }
        }
        best.context("no placement was simulated")
    }
}

/// `--plot`: every configuration's predicted speed-up on 1, 2, 4, ..., 256 workers.
fn plot(
    png: &Path,
    prepared: &[Prepared],
    args: &PlanArgs,
    link: Link,
    e2e: Option<f64>,
) -> Result<()> {
    let counts: Vec<usize> = (0..9).map(|i| 1 << i).collect();
    let mut curves = Vec::new();
    for c in prepared {
        let steps = counts
            .iter()
            .map(|&w| c.best(w, args, link).map(|(s, _)| (w, s)))
            .collect::<Result<Vec<_>>>()?;
        let base = e2e.unwrap_or(steps[0].1);
        let isolated = c.plan.aux_input == AuxInput::Isolated;
        curves.push(Curve {
            label: format!(
                "{}{}",
                c.spec.method(c.plan.groups),
                if isolated { " iso" } else { "" }
            ),
            end_to_end: c.is_end_to_end(),
            groups: c.plan.groups,
            dashed: isolated,
            points: steps.into_iter().map(|(w, s)| (w, base / s)).collect(),
        });
    }
    let runtime = match args.runtime {
        SimRuntime::Threads => "worker threads",
        SimRuntime::Mpi => "processes",
    };
    let y = match e2e {
        Some(_) => "predicted speed-up over end-to-end on one worker",
        None => "predicted speed-up over one worker",
    };
    crate::report::speedup::draw(
        png,
        &curves,
        &format!("Predicted speed-up vs workers ({runtime}; colour: G, dashed: isolated)"),
        y,
    )
}

/// Marks the configurations no other beats or ties on every axis: step time, max node MACs,
/// parameters and memory (and accuracy, when known).
fn mark_pareto(found: &mut [Candidate]) {
    let axes = |c: &Candidate| {
        [
            c.step,
            c.max_macs as f64,
            c.max_params as f64,
            c.max_memory,
            -c.accuracy.unwrap_or(0.0),
        ]
    };
    let flags: Vec<bool> = found
        .iter()
        .map(|c| {
            let a = axes(c);
            !found.iter().any(|o| {
                let b = axes(o);
                b.iter().zip(&a).all(|(x, y)| x <= y) && b.iter().zip(&a).any(|(x, y)| x < y)
            })
        })
        .collect();
    for (c, f) in found.iter_mut().zip(flags) {
        c.pareto = f;
    }
}

fn print(
    out: &mut crate::stdout::Stdout,
    args: &PlanArgs,
    workers: usize,
    e2e: Option<f64>,
    found: &[Candidate],
) -> Result<()> {
    if args.json {
        let rows: Vec<_> = found
            .iter()
            .map(|c| {
                serde_json::json!({
                    "workers": workers,
                    "cores": args.cores,
                    "method": c.method,
                    "plan": c.plan,
                    "groups": c.groups,
                    "aux_input": c.aux.name(),
                    "predicted_step_seconds": c.step,
                    "speedup_vs_end_to_end": e2e.map(|e| e / c.step),
                    "placed_by": c.placed_by,
                    "max_node_macs": c.max_macs,
                    "max_node_params": c.max_params,
                    "max_node_memory_bytes": c.max_memory,
                    "head_accuracy": c.accuracy,
                    "pareto": c.pareto,
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(());
    }
    let runtime = match args.runtime {
        SimRuntime::Threads => "worker threads of one process",
        SimRuntime::Mpi => "a process per worker",
    };
    let (cores, placements) = match args.cores {
        Some(c) if args.runtime == SimRuntime::Threads => (
            format!(", sharing {c} cores"),
            ", or a worker thread per node (train's default runtime; by: node)",
        ),
        Some(c) => (format!(", sharing {c} cores"), ""),
        None => (String::new(), ""),
    };
    writeln!(
        out,
        "PREDICTED on {workers} workers ({runtime}{cores}, pipeline depth {}): steady seconds per \
         step, nodes placed by measured time or by MACs{placements}, the best kept; vs e2e: over \
         the end-to-end step on one worker{}; * = Pareto front (step, max node MACs, params, \
         memory{})",
        args.pipeline_depth,
        e2e.map_or(" (no reference in the profiles)".into(), |e| format!(
            " ({:.1} ms)",
            e * 1e3
        )),
        if args.accuracy.is_some() {
            ", accuracy"
        } else {
            ""
        }
    )?;
    writeln!(
        out,
        "  {:<28} {:<14} {:>9} {:>7} {:>6} {:>11} {:>10} {:>10} {:>8}",
        "configuration",
        "aux input",
        "step ms",
        "vs e2e",
        "by",
        "max MACs",
        "max params",
        "max MiB",
        "acc %"
    )?;
    for c in found {
        writeln!(
            out,
            "{} {:<28} {:<14} {:>9.1} {:>7} {:>6} {:>11.3e} {:>10} {:>10.1} {:>8}",
            if c.pareto { '*' } else { ' ' },
            c.method,
            c.aux.name(),
            c.step * 1e3,
            e2e.map_or("-".into(), |e| format!("{:.2}x", e / c.step)),
            c.placed_by,
            c.max_macs as f64,
            c.max_params,
            c.max_memory / (1 << 20) as f64,
            c.accuracy
                .map_or("-".into(), |a| format!("{:.2}", 100.0 * a))
        )?;
    }
    if let Some(target) = args.target_accuracy {
        match found
            .iter()
            .find(|c| c.accuracy.is_some_and(|a| 100.0 * a >= target))
        {
            Some(c) => writeln!(
                out,
                "fastest at >= {target}% accuracy on {workers} workers: {} ({}), {:.1} ms per step \
                 predicted, {:.2}% measured",
                c.method,
                c.aux.name(),
                c.step * 1e3,
                100.0 * c.accuracy.unwrap_or(0.0)
            )?,
            None => writeln!(
                out,
                "no configuration with a measured accuracy reaches {target}% (of {} with one)",
                found.iter().filter(|c| c.accuracy.is_some()).count()
            )?,
        }
    }
    writeln!(out)?;
    Ok(())
}
