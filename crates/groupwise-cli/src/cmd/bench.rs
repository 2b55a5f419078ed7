//! `groupwise bench`: median training-step time of ResNet-32 (32x32x3, 10 classes) for several K x G
//! plans in this process, interleaved with the same step in PyTorch (`scripts/bench_torch.py`), with
//! the ratio.
//!
//! Interleaved: in each of `--rounds` rounds, every configuration is timed here and then at once by a
//! PyTorch child process of its own, so the two sides of a pair run back to back under the same load
//! of the machine; what is reported is each side's median over the rounds.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use groupwise::local::{LossConfig, Network, SgdConfig};
use groupwise::model::Arch;
use groupwise::plan::{AuxInput, Plan, PlanSpec};

use crate::args::BenchArgs;
use crate::cmd::bench_parallel;
use crate::stdout::stdout;

/// The configurations timed when `--configs` is not given: end-to-end, DGL K=4, and GN-DGL K=4 with
/// G=2 and G=4 (the single-process targets of the README's speed table).
const DEFAULT_CONFIGS: [&str; 4] = ["1:1", "4:1", "4:2", "4:4"];

/// One `--configs` entry, `K:G`.
struct Config {
    /// As typed.
    name: String,
    /// The plan (`1`, `1A`, `4`, ...).
    plan: String,
    /// Groups G.
    groups: i64,
}

impl Config {
    fn parse(c: &str) -> Result<Config> {
        let (k, g) = c
            .split_once(':')
            .with_context(|| format!("--configs entry '{c}' is not K:G"))?;
        Ok(Config {
            name: c.to_string(),
            plan: k.to_string(),
            groups: g
                .parse()
                .with_context(|| format!("--configs entry '{c}': bad G"))?,
        })
    }
}

/// The median of `v` (the mean of the middle two for an even count); NaN when empty.
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Median step time of `plan` here: the sequential path, fixed random images and labels.
fn time_groupwise(plan: &Plan, a: &BenchArgs) -> f64 {
    tch::manual_seed(0);
    let mut net = Network::new(
        plan,
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
    median(times)
}

/// The PyTorch side: where the interpreter and the script are.
struct Torch {
    python: PathBuf,
    script: PathBuf,
}

impl Torch {
    fn new(a: &BenchArgs) -> Torch {
        Torch {
            python: a
                .python
                .clone()
                .or_else(|| std::env::var_os("GROUPWISE_PYTHON").map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from("python3")),
            script: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/bench_torch.py"),
        }
    }

    /// Median step time of `c` in a PyTorch child process of its own, on `threads` intra-op threads.
    fn time(&self, c: &Config, a: &BenchArgs, threads: i32) -> Result<f64> {
        let mut cmd = Command::new(&self.python);
        cmd.arg(&self.script)
            .args(["--batch", &a.batch.to_string()])
            .args(["--steps", &a.steps.to_string()])
            .args(["--warmup", &a.warmup.to_string()])
            .args(["--threads", &threads.to_string()])
            .args(["--config", &c.name]);
        let out = cmd.output().with_context(|| {
            format!(
                "cannot run {} (pass --python or --no-torch)",
                self.python.display()
            )
        })?;
        if !out.status.success() {
            bail!(
                "{} {} failed (is torch installed? pass --python or --no-torch):\n{}",
                self.python.display(),
                self.script.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().last().unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(line).with_context(|| {
            format!(
                "{}: expected a JSON line, got '{line}'",
                self.script.display()
            )
        })?;
        let (plan, groups) = (v["plan"].as_str(), v["groups"].as_i64());
        if plan != Some(c.plan.as_str()) || groups != Some(c.groups) {
            bail!(
                "{} timed {plan:?}:{groups:?} when asked for {}",
                self.script.display(),
                c.name
            );
        }
        v["median_s"]
            .as_f64()
            .with_context(|| format!("{}: no median_s in '{line}'", self.script.display()))
    }
}

/// Runs the benchmark (or with `--parallel`, [`bench_parallel::run`]) and prints a table.
pub fn run(a: BenchArgs) -> Result<()> {
    if a.rounds == Some(0) || a.steps == 0 {
        bail!("--rounds and --steps must be at least 1");
    }
    if a.parallel {
        return bench_parallel::run(&a, a.rounds.unwrap_or(1));
    }
    let rounds = a.rounds.unwrap_or(2);
    if a.threads > 0 {
        groupwise::device::set_intra_op_threads(a.threads);
    }
    let threads = tch::get_num_threads();
    let configs = match &a.configs {
        Some(list) => list.iter().map(String::as_str).collect(),
        None => DEFAULT_CONFIGS.to_vec(),
    }
    .into_iter()
    .map(Config::parse)
    .collect::<Result<Vec<_>>>()?;
    let plans = configs
        .iter()
        .map(|c| {
            Plan::new(
                Arch::resnet32(3, 32, 10),
                &c.plan,
                c.groups,
                AuxInput::StopGradient,
            )
            .with_context(|| format!("--configs entry '{}'", c.name))
        })
        .collect::<Result<Vec<_>>>()?;
    let torch = (!a.no_torch).then(|| Torch::new(&a));
    // times[config] = (groupwise medians, PyTorch medians), one per round.
    let mut times = vec![(Vec::new(), Vec::new()); configs.len()];
    for round in 1..=rounds {
        for ((c, plan), (ours, theirs)) in configs.iter().zip(&plans).zip(&mut times) {
            let t = time_groupwise(plan, &a);
            ours.push(t);
            let p = torch.as_ref().map(|t| t.time(c, &a, threads)).transpose()?;
            if let Some(p) = p {
                theirs.push(p);
            }
            eprintln!(
                "round {round}/{rounds}: {} groupwise {t:.4} s, PyTorch {}",
                c.name,
                p.map_or("-".into(), |p| format!("{p:.4} s"))
            );
        }
    }
    let mut out = stdout();
    writeln!(
        out,
        "ResNet-32, batch {}, 32x32x3, {threads} intra-op threads; each side's median step of {} \
         (after {} warm-up), median over {} round(s)",
        a.batch, a.steps, a.warmup, rounds
    )?;
    if torch.is_some() {
        writeln!(
            out,
            "interleaved: in every round each configuration runs here, then at once in a PyTorch \
             process of its own (scripts/bench_torch.py); time ratio = groupwise / PyTorch"
        )?;
    }
    writeln!(
        out,
        "{:<6} {:<16} {:>12} {:>8} {:>12} {:>8} {:>11}",
        "K:G", "method", "groupwise s", "img/s", "PyTorch s", "img/s", "time ratio"
    )?;
    for (c, (ours, theirs)) in configs.iter().zip(times) {
        let t = median(ours);
        let (ps, pi, ratio) = match median(theirs) {
            p if p.is_nan() => ("-".into(), "-".into(), "-".into()),
            p => (
                format!("{p:.4}"),
                format!("{:.0}", a.batch as f64 / p),
                format!("{:.2}x", t / p),
            ),
        };
        let method = c
            .plan
            .parse::<PlanSpec>()
            .map_or_else(|_| c.plan.clone(), |s| s.method(c.groups));
        writeln!(
            out,
            "{:<6} {:<16} {:>12.4} {:>8.0} {:>12} {:>8} {:>11}",
            c.name,
            method,
            t,
            a.batch as f64 / t,
            ps,
            pi,
            ratio
        )?;
    }
    Ok(())
}
