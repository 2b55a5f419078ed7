//! `groupwise bench`: median training-step time of ResNet-32 (32x32x3, 10 classes) for several K x G
//! plans, and in the same run the same step in PyTorch (`scripts/bench_torch.py`), with the ratio.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use groupwise::local::{LossConfig, Network, SgdConfig};
use groupwise::model::Arch;
use groupwise::plan::{AuxInput, Plan};

use crate::args::BenchArgs;
use crate::cmd::bench_parallel;
use crate::stdout::stdout;

fn time_rust(plan_name: &str, groups: i64, a: &BenchArgs) -> Result<f64> {
    let plan = Plan::new(
        Arch::resnet32(3, 32, 10),
        plan_name,
        groups,
        AuxInput::StopGradient,
    )?;
    tch::manual_seed(0);
    let mut net = Network::new(
        &plan,
        LossConfig::default(),
        SgdConfig::default(),
        Device::Cpu,
    );
    let x = Tensor::randn([a.batch, 3, 32, 32], (Kind::Float, Device::Cpu));
    let y = Tensor::randint(10, [a.batch], (Kind::Int64, Device::Cpu));
    let mut times = Vec::with_capacity(a.steps);
    for i in 0..a.warmup + a.steps {
        let t = Instant::now();
        net.train_step(&x, &y, 0.01);
        if i >= a.warmup {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn configs(a: &BenchArgs) -> Vec<String> {
    a.configs
        .clone()
        .unwrap_or_else(|| vec!["1:1".into(), "4:4".into()])
}

fn time_torch(a: &BenchArgs) -> Result<Vec<(String, i64, f64)>> {
    let python = a
        .python
        .clone()
        .or_else(|| std::env::var_os("GROUPWISE_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("python3"));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/bench_torch.py");
    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .args(["--batch", &a.batch.to_string()])
        .args(["--steps", &a.steps.to_string()])
        .args(["--warmup", &a.warmup.to_string()])
        .args(["--threads", &a.threads.to_string()]);
    for c in &configs(a) {
        cmd.args(["--config", c]);
    }
    let out = cmd.output().with_context(|| {
        format!(
            "cannot run {} (pass --python or --no-torch)",
            python.display()
        )
    })?;
    if !out.status.success() {
        bail!(
            "{} {} failed (is torch installed? pass --python or --no-torch):\n{}",
            python.display(),
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)?;
            Ok((
                v["plan"].as_str().unwrap_or_default().to_string(),
                v["groups"].as_i64().unwrap_or_default(),
                v["median_s"].as_f64().unwrap_or(f64::NAN),
            ))
        })
        .collect()
}

/// Runs the benchmark (or with `--parallel`, [`bench_parallel::run`]) and prints a table.
pub fn run(a: BenchArgs) -> Result<()> {
    if a.parallel {
        return bench_parallel::run(&a);
    }
    if a.threads > 0 {
        tch::set_num_threads(a.threads as i32);
    }
    let mut rows = Vec::new();
    for c in &configs(&a) {
        let (k, g) = c
            .split_once(':')
            .with_context(|| format!("--configs entry '{c}' is not K:G"))?;
        let g: i64 = g.parse().with_context(|| format!("bad G in '{c}'"))?;
        eprintln!("timing groupwise K={k} G={g} ...");
        rows.push((k.to_string(), g, time_rust(k, g, &a)?));
    }
    let torch = if a.no_torch {
        None
    } else {
        eprintln!("timing PyTorch ...");
        Some(time_torch(&a)?)
    };
    let mut out = stdout();
    writeln!(
        out,
        "ResNet-32, batch {}, 32x32x3, {} threads, median of {} steps",
        a.batch,
        tch::get_num_threads(),
        a.steps
    )?;
    writeln!(
        out,
        "{:<8} {:>14} {:>12} {:>14} {:>12} {:>14}",
        "K:G", "groupwise s", "img/s", "PyTorch s", "img/s", "time ratio"
    )?;
    for (k, g, t) in rows {
        let theirs = torch
            .as_ref()
            .and_then(|v| v.iter().find(|(pk, pg, _)| *pk == k && *pg == g))
            .map(|r| r.2);
        let (ts, ti, ratio) = match theirs {
            Some(p) => (
                format!("{p:.4}"),
                format!("{:.0}", a.batch as f64 / p),
                format!("{:.2}x", t / p),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        writeln!(
            out,
            "{:<8} {:>14.4} {:>12.0} {:>14} {:>12} {:>14}",
            format!("{k}:{g}"),
            t,
            a.batch as f64 / t,
            ts,
            ti,
            ratio
        )?;
    }
    Ok(())
}
