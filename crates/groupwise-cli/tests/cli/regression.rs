//! Regression tests of the built binary, each named after what broke: a NaN checkpoint evaluated to
//! chance with status 0, output into a closed pipe panicked, and `--workers sequential` ignored
//! `--threads-per-worker` and `--inject-fault`.

use std::path::Path;
use std::process::{Command, Stdio};

use groupwise::checkpoint;
use tch::Tensor;

use crate::common::{groupwise, output, scratch};

/// Trains the smoke preset (8 steps of tiny synthetic data, seconds) into `dir`, with `extra`
/// flags; panics naming stderr if it fails.
fn smoke_run(dir: &Path, extra: &[&str]) {
    let (ok, _, stderr) = output(
        groupwise()
            .args(["train", "--preset", "smoke", "--quiet", "--threads", "1"])
            .args(extra)
            .arg("--run-dir")
            .arg(dir),
    );
    assert!(ok, "smoke run failed: {stderr}");
}

#[test]
fn eval_of_a_checkpoint_holding_nan_fails_naming_the_tensor() {
    let root = scratch("eval-nan");
    let run = root.path().join("run");
    smoke_run(&run, &["--threads-per-worker", "1"]);
    let (ok, stdout, stderr) = output(groupwise().arg("eval").arg(&run));
    assert!(ok && stdout.contains("test accuracy"), "{stderr}");

    // One weight of one unit becomes NaN, as in a run that diverged on its last step.
    let ckpt = run.join("checkpoint.safetensors");
    let mut named: Vec<(String, Tensor)> = checkpoint::read(&ckpt).unwrap().into_iter().collect();
    let (name, t) = named
        .iter_mut()
        .find(|(n, _)| n.starts_with("m1.g0.") && n.ends_with("conv1.weight"))
        .expect("a convolution of unit m1.g0");
    let _ = t.view(-1).get(3).fill_(f64::NAN);
    let name = name.clone();
    checkpoint::write_atomic(&named, &ckpt).unwrap();

    let (ok, stdout, stderr) = output(groupwise().arg("eval").arg(&run));
    assert!(!ok, "eval of a NaN checkpoint succeeded: {stdout}");
    let want = format!(
        "error: checkpoint {}: tensor '{name}' holds NaN (1 of ",
        ckpt.display()
    );
    assert!(stderr.contains(&want), "`{stderr}` lacks `{want}`");
    assert!(!stdout.contains("test accuracy"), "{stdout}");
}

/// Runs `groupwise args` with its standard output a pipe whose reader has already gone: every write
/// fails with EPIPE. Returns whether it succeeded and its stderr.
fn into_closed_pipe(args: &[&str]) -> (bool, String) {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let out = Command::new(crate::common::BIN)
        .args(args)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run groupwise");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn output_into_a_closed_pipe_ends_quietly_with_status_0() {
    // `groupwise presets | head -1`: the reader took what it wanted; like ripgrep, the command ends
    // with status 0 and says nothing (it used to panic on the broken pipe).
    for args in [
        &["presets"][..],
        &["presets", "--show", "paper"],
        &["presets", "--show", "paper", "--json"],
        &["plan"],
        &["plan", "--json"],
    ] {
        let (ok, stderr) = into_closed_pipe(args);
        assert!(ok && stderr.is_empty(), "{args:?}: {stderr}");
    }
}

#[test]
fn sequential_workers_honour_threads_per_worker_and_inject_fault() {
    let root = scratch("sequential-flags");
    let run = root.path().join("threads");
    smoke_run(
        &run,
        &["--workers", "sequential", "--threads-per-worker", "2"],
    );
    let log = std::fs::read_to_string(run.join("train.log")).unwrap();
    assert!(
        log.contains("every node in turn in this thread (sequential), 2 intra-op thread(s)"),
        "{log}"
    );
    // The smoke run has 8 steps; the fault ends it at step 3 with the node's message.
    let (ok, _, stderr) = output(
        groupwise()
            .args([
                "train",
                "--preset",
                "smoke",
                "--quiet",
                "--workers",
                "sequential",
            ])
            .args(["--threads", "1", "--inject-fault", "m0.g1@3", "--run-dir"])
            .arg(root.path().join("fault")),
    );
    assert!(!ok, "the injected fault was ignored");
    assert!(
        stderr.contains("error: node m0.g1 failed at step 3: injected fault (--inject-fault)"),
        "{stderr}"
    );
}
