//! `bench --parallel`'s three tables (speed-ups and efficiencies, predictions, per node), each over
//! the rounds: step times are the rounds' medians, and so are ratios, each round's taken within the
//! round (its own profiles, sequential runs and parallel runs, minutes apart at most), which keeps a
//! drifting machine's speed out of them. A round's profile is the mean of one taken before its runs
//! and one after.

use std::io::Write;

use anyhow::Result;

use groupwise::parallel::NodeTiming;
use groupwise::plan::NodeId;

use super::{Config, Measured, Prediction, Round};
use crate::cmd::bench::median;
use crate::stdout::Stdout;

/// How the runs were made, for the tables' headers.
pub struct Setting {
    pub batch: i64,
    /// Steps per run, warm-up included.
    pub steps: usize,
    pub warmup: usize,
    pub rounds: usize,
    pub workers: usize,
    pub cores: usize,
    pub mpi_tcp: bool,
    /// `--placement`, when given.
    pub placement: Option<String>,
    /// The MPI link the predictions assume.
    pub link: String,
}

/// The median over `rounds` of `f`.
fn over(rounds: &[Round], f: impl Fn(&Round) -> f64) -> f64 {
    median(rounds.iter().map(f).collect())
}

/// The runtimes' runs of `round`: ("threads", its run, its prediction), then MPI's.
fn runs(round: &Round) -> impl Iterator<Item = (&'static str, &Measured, Prediction)> {
    std::iter::once(("threads", &round.threads, round.predicted.threads)).chain(
        round
            .mpi
            .iter()
            .zip(round.predicted.mpi)
            .map(|(m, p)| ("mpi", m, p)),
    )
}

impl Round {
    /// The efficiency of the run `m` (this round's): its speed-up over the one-core sequential run
    /// over the ideal from the profiled node times.
    fn efficiency(&self, m: &Measured) -> f64 {
        self.seq1.step_seconds / m.step_seconds / self.ideal_time
    }

    /// One line for the terminal once the round is done: step times, each parallel run's
    /// efficiency and the error of its prediction from the profile.
    pub fn summary(&self) -> String {
        let mut line = format!(
            "profile after / before {:+.1}%, seq {:.4} s, seq1 {:.4} s",
            100.0 * self.drift,
            self.seq.step_seconds,
            self.seq1.step_seconds
        );
        for (mode, m, p) in runs(self) {
            line += &format!(
                ", {mode} {:.4} s (eff {:.2}, predicted {:+.1}%)",
                m.step_seconds,
                self.efficiency(m),
                100.0 * (p.from_profile / m.step_seconds - 1.0)
            );
        }
        line
    }
}

/// The runs of `c` by runtime: ("threads", each round's run and prediction), then MPI's.
fn by_runtime(c: &Config) -> Vec<(&'static str, Vec<(&Measured, Prediction)>)> {
    runs(&c.rounds[0])
        .map(|(mode, _, _)| {
            let each = c
                .rounds
                .iter()
                .filter_map(|r| runs(r).find(|(m, _, _)| *m == mode).map(|(_, m, p)| (m, p)))
                .collect();
            (mode, each)
        })
        .collect()
}

/// Step times, speed-ups, efficiencies and ideals.
pub fn speedups(out: &mut Stdout, s: &Setting, done: &[Config]) -> Result<()> {
    let workers = s.workers;
    writeln!(
        out,
        "ResNet-32, batch {}, synthetic 32x32x3, {} steps per run ({} warm-up included), {workers} \
         workers on {} cores (threads: {workers} worker threads; MPI: {workers} ranks of one worker \
         thread{}), placement {}; {} round(s), in each every configuration profiled and run again \
         (configurations interleaved): step times are the medians over rounds, speed-ups and \
         efficiencies the medians of each round's own",
        s.batch,
        s.steps,
        s.warmup,
        s.cores,
        if s.mpi_tcp { ", TCP over the loopback" } else { "" },
        s.placement
            .as_deref()
            .unwrap_or("by the profile's node times"),
        s.rounds
    )?;
    writeln!(
        out,
        "speedup: over the sequential path using {workers} intra-op threads (seq s); [1c]: over the \
         sequential path on one core (seq1 s)"
    )?;
    writeln!(
        out,
        "ideal: total over the busiest worker's share, nodes cut as the runtime cuts them: by forward \
         MACs (MACs), or by each node's measured step time (time: plan --profile with the threads run's \
         intra-op threads per worker, as many copies at once as it has workers, the mean of one before \
         the runs and one after); eff: [1c] speedup / ideal time"
    )?;
    writeln!(
        out,
        "{:<6} {:>7} {:>7} {:>9} {:>7} {:>6} {:>5} {:>7} {:>7} {:>6} {:>5} {:>10} {:>10}",
        "K:G",
        "seq s",
        "seq1 s",
        "threads s",
        "speedup",
        "[1c]",
        "eff",
        "mpi s",
        "speedup",
        "[1c]",
        "eff",
        "ideal MACs",
        "ideal time"
    )?;
    for c in done {
        let r = &c.rounds;
        let cols = |run: fn(&Round) -> Option<&Measured>| {
            if r.iter().any(|r| run(r).is_none()) {
                return ["-".to_string(), "-".into(), "-".into(), "-".into()];
            }
            let step = |r: &Round| run(r).map_or(f64::NAN, |m| m.step_seconds);
            [
                format!("{:.4}", over(r, step)),
                format!("{:.2}x", over(r, |r| r.seq.step_seconds / step(r))),
                format!("{:.2}x", over(r, |r| r.seq1.step_seconds / step(r))),
                format!(
                    "{:.2}",
                    over(r, |r| run(r).map_or(f64::NAN, |m| r.efficiency(m)))
                ),
            ]
        };
        let [t0, t1, t2, t3] = cols(|r| Some(&r.threads));
        let [m0, m1, m2, m3] = cols(|r| r.mpi.as_ref());
        writeln!(
            out,
            "{:<6} {:>7.4} {:>7.4} {:>9} {:>7} {:>6} {:>5} {:>7} {:>7} {:>6} {:>5} {:>9.2}x {:>9.2}x",
            c.name,
            over(r, |r| r.seq.step_seconds),
            over(r, |r| r.seq1.step_seconds),
            t0,
            t1,
            t2,
            t3,
            m0,
            m1,
            m2,
            m3,
            c.ideal_macs,
            over(r, |r| r.ideal_time)
        )?;
    }
    Ok(())
}

/// The simulator's prediction of every run beside what the run measured.
pub fn predictions(out: &mut Stdout, s: &Setting, done: &[Config]) -> Result<()> {
    writeln!(
        out,
        "predicted (groupwise plan --simulate: from the profile, each node's mean of a profile before \
         the runs and one after; and fed each node's compute time in \
         the run, which leaves only the schedule to the model) vs measured seconds per step, {} \
         workers, MPI link {} (us, GB/s); error: predicted / measured - 1, each round's prediction \
         from its own profile against its own run, the median over rounds (rounds: each one's); last \
         3: the same over the run's last 3 steps (its trace.json; warm-up left out, as in the profile)",
        s.workers, s.link
    )?;
    writeln!(
        out,
        "{:<6} {:<8} {:>11} {:>7} {:>11} {:>7} {:>10}  {:>11} {:>11} {:>7}  rounds",
        "K:G",
        "runtime",
        "predicted s",
        "error",
        "from run s",
        "error",
        "measured s",
        "last 3 pred",
        "last 3 meas",
        "error"
    )?;
    let err = |predicted: f64, measured: f64| 100.0 * (predicted / measured - 1.0);
    for c in done {
        for (mode, each) in by_runtime(c) {
            let med = |f: &dyn Fn(&(&Measured, Prediction)) -> f64| -> f64 {
                median(each.iter().map(f).collect())
            };
            let errors: Vec<String> = each
                .iter()
                .map(|(m, p)| format!("{:+.1}", err(p.from_profile, m.step_seconds)))
                .collect();
            writeln!(
                out,
                "{:<6} {:<8} {:>11.4} {:>+6.1}% {:>11.4} {:>+6.1}% {:>10.4}  {:>11.4} {:>11.4} {:>+6.1}%  {}",
                c.name,
                mode,
                med(&|(_, p)| p.from_profile),
                med(&|(m, p)| err(p.from_profile, m.step_seconds)),
                med(&|(_, p)| p.from_run),
                med(&|(m, p)| err(p.from_run, m.step_seconds)),
                med(&|(m, _)| m.step_seconds),
                med(&|(_, p)| p.last.1),
                med(&|(_, p)| p.last.0),
                med(&|(_, p)| err(p.last.1, p.last.0)),
                errors.join(",")
            )?;
        }
    }
    Ok(())
}

/// The per-node table of every threads and MPI run, over all rounds' steps.
pub fn per_node(out: &mut Stdout, s: &Setting, done: &[Config]) -> Result<()> {
    writeln!(
        out,
        "per node, seconds per step over every round: alone (plan --profile, the mean of before and \
         after the runs), compute in the run (wall \
         clock), cpu (its worker thread's CPU clock while computing), wait, comm (share of the step); \
         GMAC/s: 3 x forward MACs x batch / compute; bytes sent per step"
    )?;
    writeln!(
        out,
        "{:<6} {:<8} {:<7} {:>4} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>7} {:>11}",
        "K:G",
        "runtime",
        "node",
        "rank",
        "alone s",
        "compute",
        "cpu s",
        "wait s",
        "comm s",
        "comm%",
        "GMAC/s",
        "bytes"
    )?;
    for c in done {
        let rounds = c.rounds.len() as f64;
        let alone: Vec<f64> = (0..c.topo.len())
            .map(|id| c.rounds.iter().map(|r| r.alone[id]).sum::<f64>() / rounds)
            .collect();
        for (mode, each) in by_runtime(c) {
            let measured: Vec<&Measured> = each.iter().map(|(m, _)| *m).collect();
            let step = median(measured.iter().map(|m| m.step_seconds).collect());
            for n in summed(&measured) {
                let steps = n.steps.max(1) as f64;
                let compute = n.compute_seconds / steps;
                let id = n
                    .node
                    .parse::<NodeId>()
                    .ok()
                    .and_then(|name| c.topo.find(name));
                let (alone, gmacs) = match id {
                    Some(id) => (
                        format!("{:.4}", alone[id]),
                        format!(
                            "{:.2}",
                            3.0 * c.topo.macs(id) as f64 * s.batch as f64 / compute / 1e9
                        ),
                    ),
                    None => ("-".into(), "-".into()),
                };
                writeln!(
                    out,
                    "{:<6} {:<8} {:<7} {:>4} {:>8} {:>8.4} {:>8.4} {:>8.4} {:>8.4} {:>5.1}% {:>7} {:>11.0}",
                    c.name,
                    mode,
                    n.node,
                    n.rank,
                    alone,
                    compute,
                    n.cpu_seconds / steps,
                    n.wait_seconds / steps,
                    n.comm_seconds / steps,
                    100.0 * n.comm_seconds / steps / step,
                    gmacs,
                    n.bytes_sent as f64 / steps
                )?;
            }
        }
    }
    Ok(())
}

/// Every node's timings summed over the runs `measured` (the same configuration and runtime), in
/// the first run's order.
fn summed(measured: &[&Measured]) -> Vec<NodeTiming> {
    let Some((first, rest)) = measured.split_first() else {
        return Vec::new();
    };
    let mut total = first.nodes.clone();
    for m in rest {
        for t in &mut total {
            if let Some(n) = m
                .nodes
                .iter()
                .find(|n| n.node == t.node && n.rank == t.rank)
            {
                t.add(n);
            }
        }
    }
    total
}
