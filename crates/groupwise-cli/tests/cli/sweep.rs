//! `groupwise sweep` end to end with the built binary: a killed sweep resumes its run from the last
//! complete epoch and ends where an uninterrupted sweep ends; finished runs are skipped; a run
//! directory holding another config is never touched, nor one another process trains in.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use groupwise::checkpoint;

use crate::common::{groupwise, max_rel_diff, read_csv, scratch};

/// A sweep of one smoke run of 4 epochs, each long enough (~1 s) to be killed in the middle.
fn sweep(out: &Path, epochs: usize) -> Command {
    let mut c = groupwise();
    c.args([
        "sweep",
        "smoke",
        "--set",
        &format!("epochs={epochs}"),
        "--set",
        "data.synthetic.train=4096",
        "--no-report",
        "--threads-per-worker",
        "1",
        "--out",
    ])
    .arg(out);
    c
}

fn finish(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run groupwise sweep");
    assert!(
        out.status.success(),
        "sweep failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn metric_lines(run: &Path) -> Vec<String> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .map(|t| t.lines().map(String::from).collect())
        .unwrap_or_default()
}

#[test]
fn killed_sweep_resumes_from_the_last_epoch_and_skips_finished_runs() {
    let root = scratch("sweep-kill");
    let (out, clean) = (root.path().join("interrupted"), root.path().join("clean"));
    let run = out.join("smoke");

    // Kill the sweep once the run has logged and checkpointed its first epoch.
    let mut child = sweep(&out, 4).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while metric_lines(&run).is_empty() || !run.join("checkpoint.safetensors").exists() {
        assert!(Instant::now() < deadline, "no epoch checkpointed in 120 s");
        assert!(child.try_wait().unwrap().is_none(), "sweep ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The training process dies with its sweep: nothing moves afterwards.
    std::thread::sleep(Duration::from_millis(300));
    let after_kill = metric_lines(&run);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        metric_lines(&run),
        after_kill,
        "training went on after the sweep died"
    );
    assert!(after_kill.len() < 4, "the run finished before the kill");
    assert!(!run.join("summary.json").exists());
    // The kill may land between an epoch's metrics line and its checkpoint: that epoch is the
    // one in progress and is done again; the epochs in the checkpoint are kept.
    let saved = checkpoint::read_progress(&run.join("checkpoint.safetensors"))
        .unwrap()
        .epoch;
    assert!(
        (1..=after_kill.len()).contains(&saved) && after_kill.len() - saved <= 1,
        "checkpoint after epoch {saved}, {} lines logged",
        after_kill.len()
    );
    let kept = &after_kill[..saved];

    // Again: the run resumes after its last complete epoch, keeping the epochs it had.
    let again = finish(&mut sweep(&out, 4));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains(&format!("resume after epoch {saved}")),
        "{stderr}"
    );
    let lines = metric_lines(&run);
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[..saved], kept[..], "kept epochs were redone");
    assert!(run.join("summary.json").exists());
    // The run's log holds its decisions: both starts, where the nodes ran, every epoch, the end.
    let log = std::fs::read_to_string(run.join("train.log")).unwrap();
    for decided in [
        "INFO config from config file",
        "INFO fresh run in",
        &format!("INFO resume {} after epoch {saved} step 0", run.display()),
        "worker thread(s) per process",
        "INFO epoch 4:",
        "INFO done: head",
    ] {
        assert!(log.contains(decided), "train.log lacks '{decided}':\n{log}");
    }

    // It ends where an uninterrupted sweep ends.
    finish(&mut sweep(&clean, 4));
    let diff = max_rel_diff(
        &run.join("checkpoint.safetensors"),
        &clean.join("smoke/checkpoint.safetensors"),
    );
    assert!(
        diff <= 1e-5,
        "resumed run differs from a clean run by {diff:e}"
    );

    // Finished: skipped, untouched.
    let summary = std::fs::read(run.join("summary.json")).unwrap();
    let stamp = std::fs::metadata(run.join("summary.json"))
        .unwrap()
        .modified()
        .unwrap();
    let third = finish(&mut sweep(&out, 4));
    assert!(String::from_utf8_lossy(&third.stderr).contains("done, skipped"));
    assert_eq!(std::fs::read(run.join("summary.json")).unwrap(), summary);
    assert_eq!(
        std::fs::metadata(run.join("summary.json"))
            .unwrap()
            .modified()
            .unwrap(),
        stamp
    );

    // Another config for the same directory: a clear error before anything runs.
    let other = sweep(&out, 3).output().unwrap();
    assert!(!other.status.success());
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert!(stderr.contains("different config"), "{stderr}");
    assert_eq!(std::fs::read(run.join("summary.json")).unwrap(), summary);
}

#[test]
fn parallel_jobs_run_a_grid_and_the_report_keeps_sweep_order() {
    let root = scratch("sweep-jobs");
    let out = root.path().join("grid");
    let mut cmd = groupwise();
    cmd.args([
        "sweep",
        "smoke",
        "--grid",
        "seed=2,0,1",
        "--jobs",
        "2",
        "--threads-per-worker",
        "1",
        "--out",
    ])
    .arg(&out);
    let done = finish(&mut cmd);
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert_eq!(stderr.matches("% head").count(), 3, "{stderr}");
    for seed in [0, 1, 2] {
        assert!(out.join(format!("smoke_seed={seed}/summary.json")).exists());
    }
    // The report lists the runs in sweep order (2, 0, 1), not by name.
    let (_, rows) = read_csv(&out.join("report/results.csv"));
    let names: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(names, ["smoke_seed=2", "smoke_seed=0", "smoke_seed=1"]);
}

#[test]
fn a_run_another_process_trains_is_not_started_and_not_touched() {
    let root = scratch("sweep-held");
    let out = root.path().join("sweep");
    let run = out.join("smoke");
    // This test process holds the run directory, as a `groupwise train` there would.
    let held = groupwise::train::RunDir::open(&run).unwrap();
    let result = sweep(&out, 1).output().unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success(), "{stderr}");
    let holder = format!("is in use by process {} on ", std::process::id());
    assert!(
        stderr.contains("smoke: NOT STARTED") && stderr.contains(&holder),
        "{stderr}"
    );
    assert!(stderr.contains("1 of 1 runs failed: smoke"), "{stderr}");
    let mut files: Vec<String> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["lock"], "the sweep wrote into a held run directory");
    drop(held);
}
