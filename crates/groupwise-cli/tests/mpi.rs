//! The built `groupwise` under `mpiexec`: same parameters as the sequential path on 2, 3 and 5 ranks,
//! and a failing node ends the whole job promptly with the rank's message, leaving a resumable
//! checkpoint. Each launch has a hard deadline. Skipped (with a notice) when the binary was built
//! without the `mpi` feature or no `mpiexec` is on PATH; `.ci/run` installs OpenMPI and runs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_groupwise");
const DEADLINE: Duration = Duration::from_secs(180);

fn launcher() -> Option<PathBuf> {
    if !cfg!(feature = "mpi") {
        eprintln!("NOTICE: MPI tests skipped: built without `--features mpi`");
        return None;
    }
    let path = std::env::var_os("PATH")?;
    let found = std::env::split_paths(&path)
        .map(|d| d.join("mpiexec"))
        .find(|p| p.is_file());
    if found.is_none() {
        eprintln!("NOTICE: MPI tests skipped: no mpiexec on PATH (apt install openmpi-bin)");
    }
    found
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("groupwise-mpi-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A tiny synthetic K x G run: ResNet-32 shape, 5 steps an epoch, 2 epochs.
fn args(plan: &str, groups: &str, dir: &Path) -> Vec<String> {
    let mut a: Vec<String> = [
        "train",
        "--preset",
        "smoke",
        "--synthetic",
        "16,3,4,160,40",
        "--depth",
        "32",
        "--widths",
        "8,8,16,16",
        "--plan",
        plan,
        "--groups",
        groups,
        "--epochs",
        "2",
        "--lr",
        "0.05",
        "--seed",
        "5",
        "--threads",
        "1",
        "--threads-per-worker",
        "1",
        "--quiet",
        "--run-dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(dir.display().to_string());
    a
}

/// Runs a command with a hard deadline (killed and failed past it).
fn run_with_deadline(mut cmd: Command) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    // Let OpenMPI run as root in containers, oversubscribe 2 cores, skip CMA (blocked by ptrace rules
    // in many containers).
    for (k, v) in [
        ("OMPI_ALLOW_RUN_AS_ROOT", "1"),
        ("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"),
        ("OMPI_MCA_rmaps_base_oversubscribe", "1"),
        ("OMPI_MCA_btl_vader_single_copy_mechanism", "none"),
    ] {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let mut child = cmd.spawn().expect("launch");
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "hung past {DEADLINE:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn mpi(mpiexec: &Path, ranks: usize, args: &[String], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(mpiexec);
    cmd.arg("-np").arg(ranks.to_string()).arg(BIN).args(args);
    cmd.args(["--transport", "mpi"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_with_deadline(cmd)
}

fn sequential(args: &[String]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).args(["--workers", "sequential"]);
    run_with_deadline(cmd)
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Largest relative difference over every tensor of two run directories' checkpoints.
fn max_rel_diff(a: &Path, b: &Path) -> f64 {
    let read = |d: &Path| {
        let mut v = tch::Tensor::read_safetensors(d.join("checkpoint.safetensors")).unwrap();
        v.sort_by(|x, y| x.0.cmp(&y.0));
        v
    };
    let (ta, tb) = (read(a), read(b));
    assert_eq!(ta.len(), tb.len(), "same tensors");
    let mut worst = 0f64;
    for ((na, x), (nb, y)) in ta.iter().zip(&tb) {
        assert_eq!(na, nb);
        let x = x.to_kind(tch::Kind::Double);
        let y = y.to_kind(tch::Kind::Double);
        let scale = x.abs().max().double_value(&[]).max(1e-12);
        worst = worst.max((&x - &y).abs().max().double_value(&[]) / scale);
    }
    worst
}

fn equivalence(plan: &str, groups: &str, ranks: &[usize]) {
    let Some(mpiexec) = launcher() else { return };
    let name = format!("p{plan}g{groups}");
    let seq = scratch(&format!("{name}-seq"));
    ok(&sequential(&args(plan, groups, &seq)), "sequential run");
    for &n in ranks {
        let dir = scratch(&format!("{name}-np{n}"));
        let out = mpi(&mpiexec, n, &args(plan, groups, &dir), &[]);
        ok(&out, &format!("mpiexec -np {n}"));
        let diff = max_rel_diff(&seq, &dir);
        assert!(
            diff <= 1e-5,
            "plan {plan} G={groups} on {n} ranks differs by {diff:e}"
        );
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap())
                .unwrap();
        assert_eq!(summary["runtime"], format!("mpi:{n}"));
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_dir_all(&seq);
}

#[test]
fn mpi_matches_sequential_k4_g2_on_2_and_5_ranks() {
    equivalence("4", "2", &[2, 5]);
}

#[test]
fn mpi_matches_sequential_k2_g1_on_2_and_3_ranks() {
    // K=2/G=1 has 3 nodes (two modules and the head): 3 ranks is one node per rank.
    equivalence("2", "1", &[2, 3]);
}

#[test]
fn mpi_failing_node_aborts_the_job_and_the_checkpoint_resumes() {
    let Some(mpiexec) = launcher() else { return };
    let dir = scratch("fault");
    let a = args("4", "2", &dir);
    // Epoch 1 is steps 1-5; node m2.g1 fails at step 8, in epoch 2.
    let start = Instant::now();
    let out = mpi(&mpiexec, 3, &a, &[("GROUPWISE_FAULT", "m2.g1@8")]);
    let secs = start.elapsed().as_secs_f64();
    assert!(!out.status.success(), "the job must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("node m2.g1 failed at step 8") && err.contains("groupwise: rank"),
        "{err}"
    );
    assert!(secs < 60.0, "took {secs:.0}s to end");
    // The checkpoint of epoch 1 is intact and the run resumes to the same end as a clean run.
    let resumed = mpi(
        &mpiexec,
        3,
        &[
            "train".to_string(),
            "--resume".into(),
            "--run-dir".into(),
            dir.display().to_string(),
            "--quiet".into(),
            "--threads-per-worker".into(),
            "1".into(),
        ],
        &[],
    );
    ok(&resumed, "resume");
    let clean = scratch("fault-clean");
    ok(&sequential(&args("4", "2", &clean)), "clean run");
    assert!(max_rel_diff(&dir, &clean) <= 1e-5);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&clean);
}
