//! The built `groupwise` under `mpiexec`: same parameters as the sequential path on 2, 3 and 5 ranks;
//! a failing node ends the whole job promptly with the rank's message, and a rank killed from
//! outside (`kill -9`) ends it within 10 s with mpiexec naming the rank; either way the checkpoint
//! resumes to where an uninterrupted run ends. Each launch has a hard deadline. Skipped (with a notice) when the binary was built
//! without the `mpi` feature or no `mpiexec` is on PATH, except under `GROUPWISE_EXPECT_MPI=1`
//! (`make check` with the feature), where a skip is a failure; `.ci/run` installs OpenMPI and runs
//! them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use groupwise_cli::mpiexec;

use crate::common::{max_rel_diff, scratch, BIN};

const DEADLINE: Duration = Duration::from_secs(180);

/// `mpiexec`, or `None` with a notice when the MPI tests cannot run here; a panic instead when
/// `GROUPWISE_EXPECT_MPI=1` says they must.
pub(crate) fn launcher() -> Option<PathBuf> {
    let found = if cfg!(feature = "mpi") {
        mpiexec::find().ok_or("no mpiexec on PATH (apt install openmpi-bin)")
    } else {
        Err("built without `--features mpi`")
    };
    match found {
        Ok(path) => Some(path),
        Err(why) if std::env::var("GROUPWISE_EXPECT_MPI").as_deref() == Ok("1") => {
            panic!("GROUPWISE_EXPECT_MPI=1, yet the MPI tests would be skipped: {why}")
        }
        Err(why) => {
            eprintln!("NOTICE: MPI tests skipped: {why}");
            None
        }
    }
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
    for (k, v) in mpiexec::CONTAINER_ENV {
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

fn mpi(mpiexec: &Path, ranks: usize, args: &[String], extra: &[&str]) -> Output {
    let mut cmd = Command::new(mpiexec);
    cmd.arg("-np").arg(ranks.to_string()).arg(BIN).args(args);
    cmd.args(["--transport", "mpi"]).args(extra);
    run_with_deadline(cmd)
}

/// `groupwise train --resume` of `dir` under `mpiexec -np ranks`.
fn resume_under_mpi(mpiexec: &Path, ranks: usize, dir: &Path) -> Output {
    let args = [
        "train".to_string(),
        "--resume".into(),
        "--run-dir".into(),
        dir.display().to_string(),
        "--quiet".into(),
        "--threads-per-worker".into(),
        "1".into(),
    ];
    mpi(mpiexec, ranks, &args, &[])
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

/// Largest relative difference between two run directories' checkpoints.
fn run_diff(a: &Path, b: &Path) -> f64 {
    let ckpt = "checkpoint.safetensors";
    max_rel_diff(&a.join(ckpt), &b.join(ckpt))
}

fn equivalence(plan: &str, groups: &str, ranks: &[usize]) {
    let Some(mpiexec) = launcher() else { return };
    let root = scratch(&format!("mpi-p{plan}g{groups}"));
    let seq = root.path().join("seq");
    ok(&sequential(&args(plan, groups, &seq)), "sequential run");
    assert!(!seq.join("trace.json").exists());
    for &n in ranks {
        let dir = root.path().join(format!("np{n}"));
        let out = mpi(&mpiexec, n, &args(plan, groups, &dir), &[]);
        ok(&out, &format!("mpiexec -np {n}"));
        let diff = run_diff(&seq, &dir);
        assert!(
            diff <= 1e-5,
            "plan {plan} G={groups} on {n} ranks differs by {diff:e}"
        );
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap())
                .unwrap();
        assert_eq!(summary["runtime"], format!("mpi:{n}"));
        // Every rank's nodes in the trace of the last epoch's last 4 steps (7-10).
        let trace = crate::simulate::check_trace(&dir, n, (4, 10));
        assert_eq!(trace["runtime"], format!("mpi:{n}"));
    }
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
    let root = scratch("mpi-fault");
    let dir = root.path().join("fault");
    let a = args("4", "2", &dir);
    // Epoch 1 is steps 1-5; node m2.g1 fails at step 8, in epoch 2.
    let start = Instant::now();
    let out = mpi(&mpiexec, 3, &a, &["--inject-fault", "m2.g1@8"]);
    let secs = start.elapsed().as_secs_f64();
    assert!(!out.status.success(), "the job must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("node m2.g1 failed at step 8") && err.contains("groupwise: rank"),
        "{err}"
    );
    assert!(secs < 60.0, "took {secs:.0}s to end");
    // The checkpoint of epoch 1 is intact and the run resumes to the same end as a clean run.
    ok(&resume_under_mpi(&mpiexec, 3, &dir), "resume");
    let clean = root.path().join("clean");
    ok(&sequential(&args("4", "2", &clean)), "clean run");
    assert!(run_diff(&dir, &clean) <= 1e-5);
}

/// The processes below `ancestor` that are MPI ranks, as `(pid, rank)` sorted by rank: read from
/// `/proc` (each process's parent in `stat`, its rank in the `OMPI_COMM_WORLD_RANK` or `PMI_RANK`
/// its launcher put in `environ`), so it finds them under OpenMPI's mpiexec and under launchers that
/// start ranks through a proxy.
fn ranks_below(ancestor: u32) -> Vec<(u32, usize)> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`, where comm may hold spaces and parentheses.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parents.push((pid, ppid));
        }
    }
    let mut below = vec![ancestor];
    let mut i = 0;
    while i < below.len() {
        let p = below[i];
        below.extend(parents.iter().filter(|&&(_, pp)| pp == p).map(|&(c, _)| c));
        i += 1;
    }
    let mut ranks: Vec<(u32, usize)> = below[1..]
        .iter()
        .filter_map(|&pid| {
            let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            let rank = env.split(|&b| b == 0).find_map(|kv| {
                let kv = std::str::from_utf8(kv).ok()?;
                kv.strip_prefix("OMPI_COMM_WORLD_RANK=")
                    .or_else(|| kv.strip_prefix("PMI_RANK="))?
                    .parse()
                    .ok()
            })?;
            Some((pid, rank))
        })
        .collect();
    ranks.sort_by_key(|&(_, r)| r);
    ranks
}

/// Whether process `pid` still runs (a zombie waiting to be reaped does not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

fn kill_9(pid: u32) {
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
}

/// The K=2, G=1 run of [`args`] made long enough to kill in the middle: 20 steps an epoch, 6 epochs
/// (a few seconds under mpiexec).
fn long_args(dir: &Path) -> Vec<String> {
    let mut a = args("2", "1", dir);
    for (flag, value) in [("--synthetic", "16,3,4,640,40"), ("--epochs", "6")] {
        let i = a.iter().position(|x| x == flag).expect("a flag of args()");
        a[i + 1] = value.to_string();
    }
    a
}

/// Epochs of a run directory's metrics lines, in order.
fn metric_epochs(dir: &Path) -> Vec<u64> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["epoch"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[test]
fn mpi_rank_killed_from_outside_ends_the_job_and_the_run_resumes() {
    let Some(mpiexec) = launcher() else { return };
    let root = scratch("mpi-kill");
    let dir = root.path().join("killed");
    // K=2/G=1 on 3 ranks: one node per rank, rank 2 the head.
    let mut cmd = Command::new(&mpiexec);
    cmd.args(["-np", "3"]).arg(BIN).args(long_args(&dir));
    cmd.args(["--transport", "mpi"]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in mpiexec::CONTAINER_ENV {
        cmd.env(k, v);
    }
    let mut job = cmd.spawn().expect("launch");
    let stop = |job: std::process::Child, why: &str| -> ! {
        for (pid, _) in ranks_below(job.id()) {
            kill_9(pid);
        }
        kill_9(job.id());
        let out = job.wait_with_output().expect("output");
        panic!("{why}: {}", String::from_utf8_lossy(&out.stderr));
    };

    // Wait until the job has checkpointed its first epoch and all three ranks are up.
    let start = Instant::now();
    let ranks = loop {
        if job.try_wait().expect("wait").is_some() {
            stop(job, "the job ended before it could be killed");
        }
        if start.elapsed() > DEADLINE {
            stop(job, "no checkpoint in time");
        }
        if dir.join("checkpoint.safetensors").exists() {
            let ranks = ranks_below(job.id());
            if ranks.len() == 3 {
                break ranks;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        ranks.iter().map(|r| r.1).collect::<Vec<_>>(),
        [0, 1, 2],
        "{ranks:?}"
    );

    // kill -9 rank 2 (not the leader): the whole job must end within 10 s, naming it.
    kill_9(ranks[2].0);
    let killed = Instant::now();
    let hard = Duration::from_secs(10);
    while job.try_wait().expect("wait").is_none() {
        if killed.elapsed() > hard {
            stop(job, "the job still ran 10 s after rank 2 was killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let ended = killed.elapsed();
    let out = job.wait_with_output().expect("output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "mpi kill: the job ended {:.2} s after rank 2 was killed",
        ended.as_secs_f64()
    );
    assert!(!out.status.success(), "the job must fail: {text}");
    assert!(
        text.contains("rank 2") && text.contains("signal 9"),
        "the job's output does not name rank 2 and its signal: {text}"
    );
    // No rank outlives the job, and the run did not finish.
    let grace = Instant::now();
    while ranks.iter().any(|&(pid, _)| running(pid)) {
        if grace.elapsed() > Duration::from_secs(2) {
            for &(pid, _) in &ranks {
                kill_9(pid);
            }
            panic!("ranks {ranks:?} outlived their job");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !dir.join("summary.json").exists(),
        "the run finished before the kill"
    );

    // --resume under mpiexec ends where an uninterrupted run ends.
    ok(&resume_under_mpi(&mpiexec, 3, &dir), "resume");
    let clean = root.path().join("clean");
    ok(&sequential(&long_args(&clean)), "clean run");
    assert_eq!(metric_epochs(&dir), [1, 2, 3, 4, 5, 6]);
    assert_eq!(metric_epochs(&clean), [1, 2, 3, 4, 5, 6]);
    let diff = run_diff(&dir, &clean);
    assert!(diff <= 1e-5, "the resumed run differs by {diff:e}");
}
