//! `groupwise bench` with tiny settings (batch 2, one timed step): the interleaving of groupwise and
//! PyTorch (a stand-in `python` that records its calls and answers known times), and `--parallel`'s
//! table on one configuration. Timing values are not asserted; what is derived from them is.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common::{groupwise, output, scratch};

/// A stand-in for `python scripts/bench_torch.py --serve`: appends its arguments to `log`, says it is
/// ready to serve the configuration it was given, then answers every request for N steps with N times
/// of 0.1 s times its call number (1-based), logging each request as "CALL N" to `log`.steps.
fn fake_python(dir: &Path, log: &Path) -> std::path::PathBuf {
    let path = dir.join("python");
    let script = format!(
        r#"#!/bin/sh
echo "$@" >> {log}
n=$(wc -l < {log})
while [ $# -gt 0 ]; do
  if [ "$1" = --config ]; then cfg=$2; fi
  shift
done
plan=${{cfg%%:*}}
groups=${{cfg##*:}}
echo "{{\"plan\": \"$plan\", \"groups\": $groups, \"ready\": true}}"
v=$(echo "$n" | awk '{{print $1 / 10}}')
while read k; do
  echo "$n $k" >> {log}.steps
  t=""
  i=0
  while [ $i -lt $k ]; do t="$t${{t:+, }}$v"; i=$((i + 1)); done
  echo "{{\"times\": [$t]}}"
done
"#,
        log = log.display()
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The table row of `config` split into its cells.
fn row<'a>(stdout: &'a str, config: &str) -> Vec<&'a str> {
    stdout
        .lines()
        .find(|l| l.starts_with(&format!("{config} ")))
        .unwrap_or_else(|| panic!("no row {config} in {stdout}"))
        .split_whitespace()
        .collect()
}

#[test]
fn bench_alternates_steps_with_a_pytorch_child_per_configuration_and_round() {
    let root = scratch("bench-interleaved");
    let log = root.path().join("calls");
    let python = fake_python(root.path(), &log);
    let (ok, stdout, stderr) = output(
        groupwise()
            .args(["bench", "--configs", "1:1,2:2", "--rounds", "2"])
            .args([
                "--steps",
                "3",
                "--warmup",
                "1",
                "--batch",
                "2",
                "--threads",
                "1",
            ])
            .arg("--python")
            .arg(&python),
    );
    assert!(ok, "{stderr}");
    // One child per configuration and round, in round order, each with its one configuration and
    // the threads of this side.
    let calls = std::fs::read_to_string(&log).unwrap();
    let configs: Vec<&str> = calls
        .lines()
        .map(|l| {
            assert!(
                l.contains("--threads 1 ") && l.contains("--batch 2 ") && l.contains("--serve "),
                "{l}"
            );
            assert_eq!(l.matches("--config ").count(), 1, "{l}");
            l.rsplit("--config ").next().unwrap().trim()
        })
        .collect();
    assert_eq!(configs, ["1:1", "2:2", "1:1", "2:2"]);
    // Each child warmed up, then asked for the 3 timed steps one at a time (groupwise's own step
    // between two requests).
    let steps = std::fs::read_to_string(log.with_extension("steps")).unwrap();
    let expected: String = (1..=4).map(|n| format!("{n} 1\n").repeat(4)).collect();
    assert_eq!(steps, expected);
    // Each pair back to back: groupwise then its PyTorch child, round by round.
    let rounds: Vec<&str> = stderr.lines().filter(|l| l.starts_with("round ")).collect();
    assert_eq!(rounds.len(), 4, "{stderr}");
    assert!(
        rounds[1].starts_with("round 1/2: 2:2 groupwise ")
            && rounds[1].ends_with("PyTorch 0.2000 s")
    );
    assert!(
        rounds[2].starts_with("round 2/2: 1:1 groupwise ")
            && rounds[2].ends_with("PyTorch 0.3000 s")
    );
    assert!(stdout.contains("interleaved"), "{stdout}");
    // PyTorch: the median over rounds (1:1 answered 0.1 and 0.3 s; 2:2 0.2 and 0.4 s); the ratio is
    // groupwise's median over it.
    for (config, method, torch) in [("1:1", "e2e", 0.2), ("2:2", "GN-DGL", 0.3)] {
        let cells = row(&stdout, config);
        assert_eq!(cells[1], method, "{stdout}");
        let ours: f64 = cells.iter().rev().nth(4).unwrap().parse().unwrap();
        assert_eq!(cells[cells.len() - 3], format!("{torch:.4}"), "{stdout}");
        assert_eq!(cells[cells.len() - 2], format!("{:.0}", 2.0 / torch));
        let ratio: f64 = cells[cells.len() - 1]
            .trim_end_matches('x')
            .parse()
            .unwrap();
        assert!(
            (ratio - ours / torch).abs() < 0.01,
            "{ratio} vs {ours} / {torch}"
        );
    }

    // --no-torch: no child, no PyTorch column.
    std::fs::remove_file(&log).unwrap();
    let (ok, stdout, stderr) = output(
        groupwise()
            .args(["bench", "--configs", "1:1", "--rounds", "1", "--no-torch"])
            .args([
                "--steps",
                "1",
                "--warmup",
                "0",
                "--batch",
                "2",
                "--threads",
                "1",
            ])
            .arg("--python")
            .arg(&python),
    );
    assert!(ok, "{stderr}");
    assert!(!log.exists() && !stdout.contains("interleaved"), "{stdout}");
    assert!(row(&stdout, "1:1").ends_with(&["-", "-", "-"]), "{stdout}");
}

#[test]
fn bench_parallel_reports_ideal_speedups_efficiency_and_nodes() {
    let dir = crate::common::scratch("bench-parallel");
    let gantt = dir.path().join("charts");
    // No mpiexec on PATH: the threads runs only, a note says why.
    let (ok, stdout, stderr) = output(
        groupwise()
            .env("PATH", "")
            .args([
                "bench",
                "--parallel",
                "--configs",
                "2:1",
                "--worker-threads",
                "2",
            ])
            .args([
                "--steps", "1", "--warmup", "1", "--batch", "4", "--rounds", "2",
            ])
            .arg("--gantt")
            .arg(&gantt),
    );
    assert!(ok, "{stderr}");
    assert!(stderr.contains("no MPI column"), "{stderr}");
    // The threads run beside its simulation.
    let png = std::fs::read(gantt.join("gantt-K2-G1-threads.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    assert!(
        stdout.contains("2 worker threads")
            && stdout.contains("placement by the profile's node times")
            && stdout.contains("2 round(s)"),
        "{stdout}"
    );
    // Each round's line: the profiles' drift, its threads run's efficiency and its prediction's
    // error.
    let rounds: Vec<(f64, f64)> = stderr
        .lines()
        .filter(|l| l.starts_with("round ") && l.contains(": 2:1: "))
        .map(|l| {
            let after = |key: &str| -> f64 {
                let rest = &l[l.find(key).unwrap_or_else(|| panic!("{key} in {l}")) + key.len()..];
                let end = rest.find([',', '%', ')']).unwrap();
                rest[..end]
                    .parse()
                    .unwrap_or_else(|_| panic!("{key} in {l}"))
            };
            // How far the node sum moved between the profiles before and after the runs.
            assert!(after("profile after / before ").is_finite(), "{l}");
            (after("(eff "), after("predicted "))
        })
        .collect();
    assert_eq!(rounds.len(), 2, "{stderr}");
    let mean = |f: fn(&(f64, f64)) -> f64| rounds.iter().map(f).sum::<f64>() / 2.0;
    // K:G, seq, seq1, threads s, speedup, [1c], eff, then the MPI columns as dashes and the ideals:
    // by MACs, ResNet-32 K=2 cut into 2 workers as the runtime cuts it (m0.g0 | m1.g0 head); by the
    // profiled times, at least 1 and at most 2.
    let cells = row(&stdout, "2:1");
    assert_eq!(cells.len(), 13, "{stdout}");
    assert_eq!(&cells[7..11], ["-", "-", "-", "-"]);
    assert_eq!(cells[11], "1.87x");
    let ideal: f64 = cells[12].trim_end_matches('x').parse().unwrap();
    assert!((1.0..=2.0).contains(&ideal), "{stdout}");
    // The efficiency: the median (of 2, the mean) of the rounds' own.
    let eff: f64 = cells[6].parse().unwrap();
    assert!((eff - mean(|r| r.0)).abs() <= 0.011, "{stdout}\n{stderr}");
    // The simulator's prediction of the threads run beside its measured step: from the profile and
    // from the run's own node times, each with its error (predicted / measured - 1, the median of
    // the rounds' own); then the same over the run's last steps (its trace); then each round's error
    // from the profile, as the rounds' lines said.
    let line = stdout
        .lines()
        .find(|l| l.split_whitespace().count() == 11 && l.starts_with("2:1    threads"))
        .unwrap_or_else(|| panic!("no prediction in {stdout}"));
    let cells: Vec<&str> = line.split_whitespace().collect();
    let value = |i: usize| -> f64 { cells[i].trim_end_matches('%').parse().unwrap() };
    for i in [2, 4, 6, 7, 8] {
        assert!(value(i) > 0.0, "{line}");
    }
    let each: Vec<f64> = cells[10].split(',').map(|e| e.parse().unwrap()).collect();
    assert_eq!(each.len(), 2, "{line}");
    for (e, r) in each.iter().zip(&rounds) {
        assert!((e - r.1).abs() < 1e-9, "{line}\n{stderr}");
    }
    assert!((value(3) - mean(|r| r.1)).abs() <= 0.06, "{line}\n{stderr}");
    // Per node of the threads run: alone, compute, cpu, wait, comm, comm%, GMAC/s, bytes.
    for node in ["m0.g0", "m1.g0", "head"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with("2:1    threads") && l.split_whitespace().nth(2) == Some(node))
            .unwrap_or_else(|| panic!("no node {node} in {stdout}"));
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells.len(), 12, "{line}");
        for c in [&cells[4..9], &cells[10..]].concat() {
            let v: f64 = c.parse().unwrap_or_else(|_| panic!("{c} in {line}"));
            assert!(v.is_finite() && v >= 0.0, "{line}");
        }
    }
}
