//! `groupwise bench --parallel`: the same short training run (ResNet-32, synthetic 32x32x3 data, 10
//! classes) as the sequential path, as pipelined threads and as MPI ranks, each a `groupwise train`
//! child process; step time from the run's metrics, the per-node compute / wait / communication
//! split, and the ideal speed-up from the plan's MAC balance.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use groupwise::model::Arch;
use groupwise::parallel::{Layout, Runtime, Topology};
use groupwise::plan::{AuxInput, Plan};

use crate::args::BenchArgs;
use crate::mpiexec;
use crate::stdout::stdout;

struct Measured {
    step_seconds: f64,
    nodes: Vec<Value>,
}

fn train_child(
    a: &BenchArgs,
    k: &str,
    g: &str,
    mode: &[&str],
    launcher: Option<(&Path, usize)>,
    dir: &Path,
) -> Result<Measured> {
    let exe = std::env::current_exe().context("own executable")?;
    let steps = a.warmup + a.steps;
    let images = a.batch as usize * steps;
    let mut cmd = match launcher {
        Some((mpirun, ranks)) => {
            let mut c = Command::new(mpirun);
            c.args(["-np", &ranks.to_string()]).arg(&exe);
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
        .args([
            "--preset",
            "smoke",
            "--depth",
            "32",
            "--widths",
            "16,16,32,64",
        ])
        .args(["--synthetic", &format!("32,3,10,{images},{}", a.batch)])
        .args(["--plan", k, "--groups", g, "--epochs", "1", "--no-augment"])
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
    let text = std::fs::read_to_string(dir.join("metrics.jsonl"))?;
    let m: Value = serde_json::from_str(text.lines().last().unwrap_or("{}"))?;
    let secs = m["train_seconds"].as_f64().unwrap_or(f64::NAN);
    let n = m["steps"].as_f64().unwrap_or(f64::NAN);
    let _ = std::fs::remove_dir_all(dir);
    Ok(Measured {
        step_seconds: secs / n,
        nodes: m["nodes"].as_array().cloned().unwrap_or_default(),
    })
}

/// `mpiexec` when this binary can run on MPI ranks.
fn launcher_path() -> Option<PathBuf> {
    if !cfg!(feature = "mpi") {
        return None;
    }
    mpiexec::find()
}

/// Ideal speed-up of `workers` workers over one: total MACs over the busiest worker's share, with
/// whole nodes (threads: a node cannot be split; MPI: the rank packing).
fn ideal(plan: &Plan, workers: usize) -> (f64, f64) {
    let topo = Topology::new(plan);
    let macs: Vec<f64> = (0..topo.len()).map(|i| topo.macs(i) as f64).collect();
    let total: f64 = macs.iter().sum();
    let largest = macs.iter().cloned().fold(0.0, f64::max);
    let threads = total / largest.max(total / workers as f64);
    let packed = match Layout::new(
        plan,
        &Runtime::default(),
        tch::Device::Cpu,
        workers.min(topo.len()),
        0,
        1,
    ) {
        Ok(layout) => {
            let mut per = vec![0.0; workers];
            for (id, r) in layout.ranks.iter().enumerate() {
                per[*r] += macs[id];
            }
            total / per.iter().cloned().fold(0.0, f64::max)
        }
        Err(_) => f64::NAN,
    };
    (threads, packed)
}

/// Runs `bench --parallel`.
pub fn run(a: &BenchArgs) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = a.workers.unwrap_or(cores).max(1);
    let configs = a
        .configs
        .clone()
        .unwrap_or_else(|| vec!["1:2".into(), "2:1".into(), "2:2".into()]);
    let launcher = launcher_path();
    if launcher.is_none() {
        eprintln!("note: no MPI column (build with --features mpi and put mpiexec on PATH)");
    }
    let scratch = std::env::temp_dir().join(format!("groupwise-bench-{}", std::process::id()));
    let mut out = stdout();
    writeln!(
        out,"ResNet-32, batch {}, synthetic 32x32x3, {} steps per run ({} warm-up included), {workers} workers on {cores} cores",
        a.batch,
        a.warmup + a.steps,
        a.warmup
    )?;
    writeln!(
        out,"speedup: over the sequential path using all {workers} cores for intra-op threads (seq s); \
         [1c]: over the sequential path on one core (seq1 s)"
    )?;
    writeln!(
        out,
        "{:<6} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10}",
        "K:G",
        "seq s",
        "seq1 s",
        "threads s",
        "speedup",
        "[1c]",
        "mpi s",
        "speedup",
        "[1c]",
        "ideal thr",
        "ideal mpi"
    )?;
    let mut details = Vec::new();
    for c in &configs {
        let (k, g) = c
            .split_once(':')
            .with_context(|| format!("--configs entry '{c}' is not K:G"))?;
        let groups: i64 = g.parse().with_context(|| format!("bad G in '{c}'"))?;
        let plan = Plan::new(Arch::resnet32(3, 32, 10), k, groups, AuxInput::StopGradient)?;
        eprintln!("K={k} G={g}: sequential ...");
        let seq = train_child(
            a,
            k,
            g,
            &["--workers", "sequential", "--threads", &workers.to_string()],
            None,
            &scratch.join("seq"),
        )?;
        eprintln!("K={k} G={g}: sequential, 1 thread ...");
        let seq1 = train_child(
            a,
            k,
            g,
            &["--workers", "sequential", "--threads", "1"],
            None,
            &scratch.join("seq1"),
        )?;
        eprintln!("K={k} G={g}: threads ...");
        let thr = train_child(
            a,
            k,
            g,
            &["--workers", "threads"],
            None,
            &scratch.join("thr"),
        )?;
        let mpi = match &launcher {
            Some(m) => {
                eprintln!("K={k} G={g}: mpiexec -np {workers} ...");
                let topo = Topology::new(&plan);
                Some(train_child(
                    a,
                    k,
                    g,
                    &["--transport", "mpi"],
                    Some((m, workers.min(topo.len()))),
                    &scratch.join("mpi"),
                )?)
            }
            None => None,
        };
        let (ideal_thr, ideal_mpi) = ideal(&plan, workers);
        let x =
            |base: &Measured, m: &Measured| format!("{:.2}x", base.step_seconds / m.step_seconds);
        let (ms, mx, m1) = mpi
            .as_ref()
            .map_or(("-".into(), "-".into(), "-".into()), |m| {
                (format!("{:.4}", m.step_seconds), x(&seq, m), x(&seq1, m))
            });
        writeln!(
            out,
            "{:<6} {:>8.4} {:>8.4} {:>9.4} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9.2}x {:>9.2}x",
            c,
            seq.step_seconds,
            seq1.step_seconds,
            thr.step_seconds,
            x(&seq, &thr),
            x(&seq1, &thr),
            ms,
            mx,
            m1,
            ideal_thr,
            ideal_mpi
        )?;
        details.push((c.clone(), "threads", thr));
        if let Some(m) = mpi {
            details.push((c.clone(), "mpi", m));
        }
    }
    writeln!(out)?;
    writeln!(out, "per node, seconds per step: compute / wait / communication (share of step), bytes sent per step")?;
    for (c, mode, m) in &details {
        for n in &m.nodes {
            let steps = n["steps"].as_f64().unwrap_or(1.0).max(1.0);
            let per = |k: &str| n[k].as_f64().unwrap_or(0.0) / steps;
            writeln!(
                out,
                "{:<6} {:<8} {:<7} rank {:>2}  {:.4} / {:.4} / {:.4} ({:>4.1}%)  {:>10.0} B",
                c,
                mode,
                n["node"].as_str().unwrap_or("?"),
                n["rank"].as_u64().unwrap_or(0),
                per("compute_seconds"),
                per("wait_seconds"),
                per("comm_seconds"),
                100.0 * per("comm_seconds") / m.step_seconds,
                n["bytes_sent"].as_f64().unwrap_or(0.0) / steps
            )?;
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}
