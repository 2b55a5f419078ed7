//! A run across invocations of the built binary: the run directory's lock between processes (and a
//! dead holder's lock taken over), SIGTERM and SIGINT ending a run with a checkpoint that `--resume`
//! continues exactly (threads, and the leader of an MPI job), `--max-steps` for one invocation,
//! `--resume` of a finished run, and paths that survive another working directory and a moved
//! dataset.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::common::{groupwise, max_rel_diff, output, scratch};

/// 3 epochs of 64 steps on tiny synthetic data: under a second an epoch, long enough to signal a
/// run in the middle of an epoch.
fn long_run(dir: &Path) -> Vec<String> {
    let mut a: Vec<String> = [
        "train",
        "--preset",
        "smoke",
        "--synthetic",
        "16,3,4,256,32",
        "--batch-size",
        "4",
        "--epochs",
        "3",
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

/// The checkpoint of the uninterrupted [`long_run`], made once for every test here.
fn reference() -> &'static Path {
    static REFERENCE: OnceLock<(TempDir, PathBuf)> = OnceLock::new();
    &REFERENCE
        .get_or_init(|| {
            let dir = scratch("reference");
            let run = dir.path().join("run");
            let (ok, _, err) = output(groupwise().args(long_run(&run)));
            assert!(ok, "{err}");
            (dir, run)
        })
        .1
}

/// Ends where the uninterrupted run ends: every tensor of the checkpoint is equal.
fn assert_like_reference(run: &Path) {
    let ckpt = "checkpoint.safetensors";
    let diff = max_rel_diff(&reference().join(ckpt), &run.join(ckpt));
    assert_eq!(
        diff,
        0.0,
        "{} differs from the uninterrupted run",
        run.display()
    );
}

/// A started `groupwise`, its stderr lines arriving on a channel.
struct Running {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(args: &[String]) -> Running {
        let mut cmd = groupwise();
        cmd.args(args);
        Running::spawn(cmd)
    }

    fn spawn(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start groupwise");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (at most a minute) for a stderr line containing `text`.
    fn wait_for(&mut self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let found = line.contains(text);
                    self.seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!("no line with `{text}`: {:?}", self.seen);
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// Waits (at most a minute) for the end: the exit code and every stderr line.
    fn end(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("still running after a minute: {:?}", self.seen);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader thread ends with the pipe.
        self.seen.extend(self.lines.iter());
        (status.code(), self.seen.join("\n"))
    }
}

fn resume(run: &Path) -> (bool, String, String) {
    let mut args = long_run(run);
    args.truncate(1);
    args.extend(["--resume".into(), "--quiet".into(), "--run-dir".into()]);
    args.push(run.display().to_string());
    output(groupwise().args(args))
}

#[test]
fn sigterm_checkpoints_the_step_reached_and_resume_ends_like_an_uninterrupted_run() {
    reference();
    let dir = scratch("sigterm");
    let run = dir.path().join("run");
    let mut training = Running::start(&long_run(&run));
    training.wait_for("epoch   1");
    let started = Instant::now();
    training.signal("TERM");
    let (code, stderr) = training.end();
    assert_eq!(code, Some(143), "{stderr}");
    // The step in flight finishes; then the run ends (not the epoch).
    assert!(started.elapsed() < Duration::from_secs(10), "{stderr}");
    assert!(stderr.contains("groupwise: SIGTERM: stopped "), "{stderr}");
    assert!(
        stderr.contains("checkpoint written; continue with: "),
        "{stderr}"
    );
    let command = format!("train --resume --run-dir {}", run.display());
    assert!(stderr.contains(&command), "{stderr}");
    assert!(!run.join("summary.json").exists());
    let log = std::fs::read_to_string(run.join("train.log")).unwrap();
    assert!(log.contains("stop requested: stopped after step"), "{log}");
    let (ok, _, err) = resume(&run);
    assert!(ok, "{err}");
    assert_like_reference(&run);
}

#[test]
fn sigterm_to_the_leader_of_an_mpi_job_stops_every_rank_after_the_same_step() {
    let Some(mpiexec) = crate::mpi::launcher() else {
        return;
    };
    reference();
    let dir = scratch("mpi-sigterm");
    let run = dir.path().join("run");
    let mut job = Command::new(&mpiexec);
    job.args(["-np", "2", crate::common::BIN])
        .args(long_run(&run))
        .args(["--transport", "mpi"]);
    for (k, v) in groupwise_cli::mpiexec::CONTAINER_ENV {
        job.env(k, v);
    }
    let mut training = Running::spawn(job);
    training.wait_for("epoch   1");
    // The leader's pid, from the run directory's lock; rank 1 gets no signal and must follow.
    let lock = std::fs::read_to_string(run.join("lock")).unwrap();
    let leader = lock.lines().find_map(|l| l.strip_prefix("pid ")).unwrap();
    let ok = Command::new("kill")
        .args(["-TERM", leader])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let (code, stderr) = training.end();
    assert_eq!(code, Some(143), "{stderr}");
    assert!(stderr.contains("groupwise: SIGTERM: stopped "), "{stderr}");
    let command = format!("mpiexec -np 2 {}", crate::common::BIN);
    assert!(stderr.contains(&command), "{stderr}");
    let mut resumed = Command::new(&mpiexec);
    resumed
        .args([
            "-np",
            "2",
            crate::common::BIN,
            "train",
            "--resume",
            "--run-dir",
        ])
        .arg(&run)
        .args(["--transport", "mpi", "--quiet"]);
    for (k, v) in groupwise_cli::mpiexec::CONTAINER_ENV {
        resumed.env(k, v);
    }
    let (ok, _, err) = output(&mut resumed);
    assert!(ok, "{err}");
    assert_like_reference(&run);
}

#[test]
fn a_second_signal_ends_the_process_at_once() {
    let dir = scratch("sigint-twice");
    let run = dir.path().join("run");
    let mut training = Running::start(&long_run(&run));
    training.wait_for("epoch   1");
    // Microseconds apart (the shell's builtin), well within the step the first one lets finish;
    // two different signals, since a second SIGINT pending beside the first would merge with it.
    let pid = training.child.id();
    let both = format!("kill -INT {pid}; kill -TERM {pid}");
    assert!(Command::new("sh")
        .args(["-c", &both])
        .status()
        .unwrap()
        .success());
    let (code, stderr) = training.end();
    // Handled in either order (by any of the process's threads): the second one's status.
    assert!(matches!(code, Some(130 | 143)), "{code:?}: {stderr}");
    assert!(!stderr.contains("continue with"), "{stderr}");
}

#[test]
fn a_second_run_in_a_held_directory_is_refused_and_a_dead_holder_is_taken_over() {
    let dir = scratch("locked");
    let run = dir.path().join("run");
    // Long enough to outlive the attempts below (it is killed after them).
    let mut args = long_run(&run);
    let epochs = args.iter().position(|a| a == "--epochs").unwrap() + 1;
    args[epochs] = "100".into();
    let mut first = Running::start(&args);
    first.wait_for("epoch   1");
    let config = std::fs::read(run.join("config.json")).unwrap();
    let (ok, _, err) = output(groupwise().args(long_run(&run)));
    assert!(!ok);
    let holder = format!("is in use by process {} on ", first.child.id());
    assert!(err.contains(&holder), "{err}");
    // The same refusal for a resume; nothing of the run changed.
    let (ok, _, err) = resume(&run);
    assert!(!ok && err.contains(&holder), "{err}");
    assert_eq!(std::fs::read(run.join("config.json")).unwrap(), config);
    assert_eq!(
        first.child.try_wait().unwrap(),
        None,
        "the first run ended early"
    );
    // kill -9: the kernel releases the lock, and the next run takes it over.
    first.signal("KILL");
    let (code, _) = first.end();
    assert_eq!(code, None);
    let mut args = long_run(&run);
    args.truncate(1);
    args.extend(["--resume".into(), "--max-steps".into(), "2".into()]);
    args.extend(["--run-dir".into(), run.display().to_string()]);
    let (ok, _, err) = output(groupwise().args(args));
    assert!(
        ok && err.contains("--max-steps 2: stopped in epoch"),
        "{err}"
    );
    let lock = std::fs::read_to_string(run.join("lock")).unwrap();
    assert!(
        !lock.contains(&format!("pid {}\n", first_pid(&holder))),
        "{lock}"
    );
}

/// The pid in "is in use by process PID on ".
fn first_pid(holder: &str) -> &str {
    holder.split(' ').nth(4).unwrap()
}

#[test]
fn max_steps_limits_one_invocation_and_a_finished_run_is_left_alone() {
    let dir = scratch("max-steps");
    let run = dir.path().join("run");
    let short = |resume: bool, extra: &[&str]| {
        let mut a: Vec<String> = [
            "train",
            "--preset",
            "smoke",
            "--epochs",
            "2",
            "--quiet",
            "--run-dir",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.push(run.display().to_string());
        if resume {
            a = vec![
                "train".into(),
                "--resume".into(),
                "--run-dir".into(),
                run.display().to_string(),
            ];
        }
        a.extend(extra.iter().map(|s| s.to_string()));
        output(groupwise().args(a))
    };
    // 8 steps an epoch: 3, then 2 more, then the rest.
    let (ok, _, err) = short(false, &["--max-steps", "3"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("--max-steps 3: stopped in epoch 1 of 2, after step 3; continue with:"),
        "{err}"
    );
    let config = std::fs::read_to_string(run.join("config.json")).unwrap();
    assert!(!config.contains("max_steps"), "{config}");
    let (ok, _, err) = short(true, &["--max-steps", "2"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("stopped in epoch 1 of 2, after step 5"),
        "{err}"
    );
    let (ok, out, err) = short(true, &[]);
    assert!(ok, "{err}");
    assert!(out.contains("test accuracy"), "{out}");
    let summary = std::fs::read(run.join("summary.json")).unwrap();
    let steps: serde_json::Value = serde_json::from_slice(&summary).unwrap();
    assert_eq!(steps["steps"], 16);
    // Uninterrupted, the same run ends with the same weights.
    let whole = dir.path().join("whole");
    let mut a: Vec<String> = ["train", "--preset", "smoke", "--epochs", "2", "--quiet"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.extend(["--run-dir".into(), whole.display().to_string()]);
    let (ok, _, err) = output(groupwise().args(a));
    assert!(ok, "{err}");
    let ckpt = "checkpoint.safetensors";
    assert_eq!(max_rel_diff(&whole.join(ckpt), &run.join(ckpt)), 0.0);
    // Finished: a resume says so and changes nothing.
    let (ok, _, err) = short(true, &[]);
    assert!(ok, "{err}");
    let finished = format!("run {} is finished: 2 epochs, 16 steps", run.display());
    assert!(
        err.contains(&finished) && err.contains("nothing to do"),
        "{err}"
    );
    assert_eq!(std::fs::read(run.join("summary.json")).unwrap(), summary);
}

/// A Fashion-MNIST directory of `train` and `test` random 28x28 images (IDX files, as the dataset
/// ships them unzipped).
fn write_idx_dataset(dir: &Path, train: usize, test: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut seed = 1u32;
    let mut byte = || {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (seed >> 24) as u8
    };
    for (split, n) in [("train", train), ("t10k", test)] {
        let mut images = vec![0, 0, 8, 3];
        for d in [n as u32, 28, 28] {
            images.extend(d.to_be_bytes());
        }
        images.extend((0..n * 28 * 28).map(|_| byte()));
        std::fs::write(dir.join(format!("{split}-images-idx3-ubyte")), images).unwrap();
        let mut labels = vec![0, 0, 8, 1];
        labels.extend((n as u32).to_be_bytes());
        labels.extend((0..n).map(|i| (i % 10) as u8));
        std::fs::write(dir.join(format!("{split}-labels-idx1-ubyte")), labels).unwrap();
    }
}

#[test]
fn paths_are_absolute_and_a_moved_dataset_is_found_with_data_dir() {
    let dir = scratch("paths");
    let root = dir.path();
    write_idx_dataset(&root.join("data"), 64, 20);
    let train = |extra: &[&str]| {
        let mut cmd = groupwise();
        cmd.current_dir(root).args([
            "train",
            "--preset",
            "smoke",
            "--dataset",
            "fashion-mnist",
            "--epochs",
            "2",
            "--quiet",
            "--run-dir",
            "run",
        ]);
        output(cmd.args(extra))
    };
    // A relative --data-dir, stored absolute.
    let (ok, _, err) = train(&["--data-dir", "data", "--max-steps", "1"]);
    assert!(ok, "{err}");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("run/config.json")).unwrap()).unwrap();
    let stored = PathBuf::from(config["data"]["path"].as_str().unwrap());
    assert_eq!(stored, root.join("data"));
    // Evaluated from another directory.
    let eval = |extra: &[&str]| {
        let mut cmd = groupwise();
        cmd.current_dir("/")
            .arg("eval")
            .arg(root.join("run"))
            .args(extra);
        output(&mut cmd)
    };
    let (ok, out, err) = eval(&[]);
    assert!(ok && out.contains("test accuracy"), "{err}");
    // Moved: the stored path names where it was; --data-dir points at where it is.
    std::fs::rename(root.join("data"), root.join("moved")).unwrap();
    let (ok, _, err) = eval(&[]);
    assert!(
        !ok && err.contains(&root.join("data").display().to_string()),
        "{err}"
    );
    let moved = root.join("moved").display().to_string();
    let (ok, out, err) = eval(&["--data-dir", &moved]);
    assert!(ok && out.contains("test accuracy"), "{err}");
    let mut cmd = groupwise();
    cmd.current_dir(root)
        .args(["train", "--resume", "--run-dir", "run", "--quiet"]);
    let (ok, _, err) = output(cmd.args(["--data-dir", "moved"]));
    assert!(ok, "{err}");
    let log = std::fs::read_to_string(root.join("run/train.log")).unwrap();
    assert!(
        log.contains(&format!("data from {moved} instead of config.json's")),
        "{log}"
    );
    // The run's own record keeps where it started.
    let again = std::fs::read(root.join("run/config.json")).unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&again).unwrap(),
        config
    );
    // Only the location may change.
    let (ok, _, err) = output(groupwise().current_dir(root).args([
        "train",
        "--resume",
        "--run-dir",
        "run",
        "--epochs",
        "3",
    ]));
    assert!(
        !ok && err.contains("settings differ") && err.contains("epochs"),
        "{err}"
    );
}
