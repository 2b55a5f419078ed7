//! `groupwise bench`: median training-step time of ResNet-32 (32x32x3, 10 classes) for several K x G
//! plans in this process, interleaved with the same step in PyTorch (`scripts/bench_torch.py`), with
//! the ratio.
//!
//! Interleaved step by step: in each of `--rounds` rounds, every configuration is built here and in a
//! PyTorch child process of its own (`bench_torch.py --serve`), and after both have warmed up, one
//! step here and one there alternate, so the two sides see the machine at the same moments (a VM
//! whose speed drifts by tens of percent within a minute moves both alike). What is reported is each
//! side's median step per round, then the median over the rounds.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
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

/// The sequential path of one plan, ready to train on fixed random images and labels.
struct Steps {
    net: Network,
    x: Tensor,
    y: Tensor,
}

impl Steps {
    fn new(plan: &Plan, batch: i64) -> Steps {
        tch::manual_seed(0);
        Steps {
            net: Network::new(
                plan,
                LossConfig::default(),
                SgdConfig::default(),
                Device::Cpu,
            ),
            x: Tensor::randn([batch, 3, 32, 32], (Kind::Float, Device::Cpu)),
            y: Tensor::randint(10, [batch], (Kind::Int64, Device::Cpu)),
        }
    }

    /// Trains one step; its seconds.
    fn step(&mut self) -> f64 {
        let t = Instant::now();
        self.net.train_step(&self.x, &self.y, 0.01);
        t.elapsed().as_secs_f64()
    }
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

    /// A PyTorch child process of its own serving `c`'s steps on `threads` intra-op threads, once it
    /// has built the network.
    fn start(&self, c: &Config, a: &BenchArgs, threads: i32) -> Result<TorchSteps> {
        let mut cmd = Command::new(&self.python);
        cmd.arg(&self.script)
            .args(["--batch", &a.batch.to_string()])
            .args(["--threads", &threads.to_string()])
            .args(["--serve", "--config", &c.name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| {
            format!(
                "cannot run {} (pass --python or --no-torch)",
                self.python.display()
            )
        })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            bail!("{}: no pipes to the child", self.python.display());
        };
        let mut steps = TorchSteps {
            child,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout),
            what: format!("{} {}", self.python.display(), self.script.display()),
        };
        let v = steps.answer()?;
        let (plan, groups) = (v["plan"].as_str(), v["groups"].as_i64());
        if v["ready"] != true || plan != Some(c.plan.as_str()) || groups != Some(c.groups) {
            bail!("{} answered {v} when asked to serve {}", steps.what, c.name);
        }
        Ok(steps)
    }
}

/// A running `bench_torch.py --serve`: each call to [`TorchSteps::steps`] trains that many steps
/// there. Dropping it ends the child (its input closes).
struct TorchSteps {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// The command, for errors.
    what: String,
}

impl TorchSteps {
    /// The child's next JSON line; when it has none, why (its standard error).
    fn answer(&mut self) -> Result<serde_json::Value> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        if line.is_empty() {
            drop(self.stdin.take());
            let mut err = String::new();
            if let Some(mut e) = self.child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            let status = self.child.wait()?;
            bail!(
                "{} ended ({status}; is torch installed? pass --python or --no-torch):\n{err}",
                self.what
            );
        }
        serde_json::from_str(line.trim())
            .with_context(|| format!("{}: expected a JSON line, got '{}'", self.what, line.trim()))
    }

    /// Trains `n` steps in the child; their seconds.
    fn steps(&mut self, n: usize) -> Result<Vec<f64>> {
        let stdin = self.stdin.as_mut().context("the child's input is closed")?;
        writeln!(stdin, "{n}")
            .and_then(|_| stdin.flush())
            .with_context(|| format!("{}: cannot ask for steps", self.what))?;
        let v = self.answer()?;
        let times: Option<Vec<f64>> = v["times"]
            .as_array()
            .map(|t| t.iter().filter_map(|x| x.as_f64()).collect());
        match times {
            Some(t) if t.len() == n => Ok(t),
            _ => bail!("{}: asked for {n} step(s), answered {v}", self.what),
        }
    }
}

impl Drop for TorchSteps {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// One round of configuration `c`: warm-up steps on both sides, then the timed steps, one here and
/// one in PyTorch (when `torch` is given) in turn. Each side's median step.
fn time_pair(
    plan: &Plan,
    c: &Config,
    a: &BenchArgs,
    torch: Option<(&Torch, i32)>,
) -> Result<(f64, Option<f64>)> {
    let mut theirs = torch
        .map(|(t, threads)| t.start(c, a, threads))
        .transpose()?;
    let mut ours = Steps::new(plan, a.batch);
    for _ in 0..a.warmup {
        ours.step();
    }
    if let (Some(t), true) = (&mut theirs, a.warmup > 0) {
        t.steps(a.warmup)?;
    }
    let (mut here, mut there) = (Vec::with_capacity(a.steps), Vec::with_capacity(a.steps));
    for _ in 0..a.steps {
        here.push(ours.step());
        if let Some(t) = &mut theirs {
            there.extend(t.steps(1)?);
        }
    }
    Ok((median(here), theirs.is_some().then(|| median(there))))
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
            let (t, p) = time_pair(plan, c, &a, torch.as_ref().map(|t| (t, threads)))?;
            ours.push(t);
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
            "interleaved: in every round each configuration runs here and in a PyTorch process \
             of its own (scripts/bench_torch.py --serve), one step of each in turn; time ratio = \
             groupwise / PyTorch"
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
