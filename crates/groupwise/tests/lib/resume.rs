//! A run across invocations: the run directory's lock, stale `.tmp` files, `--max-steps` as a limit
//! of one invocation, a resume of a finished run, and a stop request ending a run after a step that
//! `--resume` continues from exactly (sequential and pipelined).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use groupwise::checkpoint::{self, Progress};
use groupwise::parallel::{Local, Runtime, Workers};
use groupwise::train::TrainError;
use groupwise::train::{self, Event, Invocation, Outcome, RunConfig, RunDir, RunDirError};

use crate::common::{scratch, seeded_runs, synthetic_run};

/// 2 epochs of 3 steps (96 images, batch 32).
fn tiny() -> RunConfig {
    synthetic_run("2", 2, 96)
}

fn run_as(
    runtime: Runtime,
    c: &RunConfig,
    dir: &Path,
    invocation: &Invocation,
    observer: &mut dyn FnMut(Event),
) -> Result<Outcome, TrainError> {
    let _runs = seeded_runs();
    train::run_on(
        &mut Local::new(runtime),
        c,
        &RunDir::new(dir),
        invocation,
        observer,
    )
}

fn steps(c: &RunConfig, dir: &Path, resume: bool, max_steps: Option<usize>) -> Outcome {
    let invocation = Invocation {
        max_steps,
        ..Invocation::new(resume)
    };
    run_as(Runtime::sequential(), c, dir, &invocation, &mut |_| {}).unwrap()
}

fn progress(dir: &Path) -> (usize, usize) {
    let p = checkpoint::read_progress(&dir.join(RunDir::CHECKPOINT)).unwrap();
    (p.epoch, p.step)
}

/// Every tensor of the two runs' checkpoints is bitwise equal (parameters, BN statistics, momentum,
/// progress).
fn assert_same_checkpoint(a: &Path, b: &Path) {
    let ta = checkpoint::read(&a.join(RunDir::CHECKPOINT)).unwrap();
    let tb = checkpoint::read(&b.join(RunDir::CHECKPOINT)).unwrap();
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
    for (name, x) in &ta {
        assert!(x.equal(&tb[name]), "tensor {name} differs");
    }
}

#[test]
fn a_run_directory_is_locked_while_a_run_holds_it() {
    let dir = scratch("lock");
    let first = RunDir::open(dir.path()).unwrap();
    assert!(first.is_locked());
    let err = RunDir::open(dir.path()).unwrap_err();
    let holder = format!("process {}", std::process::id());
    assert!(matches!(err, RunDirError::Locked { .. }), "{err}");
    assert!(err.to_string().contains(&holder), "{err}");
    assert!(err.to_string().contains("is in use by"), "{err}");
    assert_eq!(
        RunDir::new(dir.path()).holder().unwrap().as_deref(),
        Some(&*format!("{holder} on {}", hostname()))
    );
    // A run in a held directory is refused before it writes anything.
    let err = run_as(
        Runtime::sequential(),
        &tiny(),
        &dir,
        &Invocation::new(false),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains(&holder), "{err}");
    assert!(!dir.join(RunDir::CONFIG).exists());
    // Readers need no lock.
    assert!(RunDir::new(dir.path())
        .read_metrics()
        .unwrap()
        .epochs
        .is_empty());
    // Released with its handle (as the kernel releases a dead process's): the next run takes it.
    drop(first);
    assert_eq!(RunDir::new(dir.path()).holder().unwrap(), None);
    let again = RunDir::open(dir.path()).unwrap();
    drop(again);
    assert!(steps(&tiny(), &dir, false, Some(1)).summary().is_none());
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn stale_tmp_files_do_not_block_a_resume_and_are_removed() {
    let (full, part) = (scratch("tmp-full"), scratch("tmp-part"));
    let c = tiny();
    steps(&c, &full, false, None);
    steps(&c, &part, false, Some(2));
    // What a full disk or a kill in the middle of atomic writes leaves.
    let leftovers = [
        part.join("checkpoint.safetensors.tmp"),
        part.join("config.json.tmp"),
    ];
    for f in &leftovers {
        std::fs::write(f, b"half a file").unwrap();
    }
    let done = steps(&c, &part, true, None);
    assert!(matches!(done, Outcome::Finished(_)), "{done:?}");
    for f in &leftovers {
        assert!(!f.exists(), "{} is still there", f.display());
    }
    assert_same_checkpoint(&full, &part);
}

#[test]
fn max_steps_limits_one_invocation_counted_from_where_the_run_stands() {
    let (full, part) = (scratch("max-full"), scratch("max-part"));
    let c = tiny();
    steps(&c, &full, false, None);
    let limited = |resume, n| steps(&c, &part, resume, Some(n));
    assert!(matches!(
        limited(false, 1),
        Outcome::StepLimit(Progress { epoch: 0, step: 1 })
    ));
    // Not stored: config.json is the run's config, and the run is not finished.
    assert_eq!(RunDir::new(part.path()).read_config().unwrap(), c);
    assert!(!RunDir::new(part.path()).finished());
    // 2 more steps end epoch 1 (its metrics line is written), 2 more go into epoch 2; a limit below
    // the steps done (1 < 3) still trains 1 more step, not an epoch.
    assert!(matches!(
        limited(true, 2),
        Outcome::StepLimit(Progress { epoch: 1, step: 0 })
    ));
    assert_eq!(
        RunDir::new(part.path())
            .read_metrics()
            .unwrap()
            .epochs
            .len(),
        1
    );
    assert!(matches!(
        limited(true, 1),
        Outcome::StepLimit(Progress { epoch: 1, step: 1 })
    ));
    assert_eq!(progress(&part), (1, 1));
    // A limit reaching past the run's end just finishes it.
    assert!(matches!(limited(true, 100), Outcome::Finished(_)));
    assert_same_checkpoint(&full, &part);
    let summary = |d: &Path| RunDir::new(d).read_summary().unwrap().unwrap();
    assert_eq!(summary(&full).test, summary(&part).test);
    assert_eq!(summary(&part).steps, 6);
}

#[test]
fn resuming_a_finished_run_changes_nothing() {
    let dir = scratch("finished");
    let c = tiny();
    steps(&c, &dir, false, None);
    let files = [
        RunDir::SUMMARY,
        RunDir::CHECKPOINT,
        RunDir::METRICS,
        RunDir::CONFIG,
    ];
    let before: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();
    for max_steps in [None, Some(5)] {
        match steps(&c, &dir, true, max_steps) {
            Outcome::AlreadyFinished(s) => assert_eq!(s.steps, 6),
            other => panic!("{other:?}"),
        }
    }
    let after: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();
    assert!(before == after, "a resume of a finished run rewrote a file");
}

/// A stop requested by the observer once it has seen step `at` of epoch 2 ends the run after a
/// later step of that epoch, with a checkpoint there; a resume ends where the uninterrupted run ends.
fn stop_and_resume(name: &str, runtime: fn() -> Runtime) {
    // 2 epochs of 10 steps: a pipeline is never all of an epoch ahead of the collector.
    let c = RunConfig {
        batch_size: 16,
        ..synthetic_run("1:0,2:0,3:0", 2, 160)
    };
    let (full, part) = (
        scratch(&format!("{name}-full")),
        scratch(&format!("{name}-part")),
    );
    run_as(runtime(), &c, &full, &Invocation::new(false), &mut |_| {}).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let invocation = Invocation {
        stop: Some(stop.clone()),
        ..Invocation::new(false)
    };
    let mut epoch = 0;
    let mut observer = |e: Event| match e {
        Event::EpochStart { epoch: e, .. } => epoch = e,
        Event::Step { step: 3, .. } if epoch == 2 => stop.store(true, Ordering::SeqCst),
        _ => {}
    };
    let outcome = run_as(runtime(), &c, &part, &invocation, &mut observer).unwrap();
    let Outcome::Interrupted(at) = outcome else {
        panic!("{name}: {outcome:?}")
    };
    assert_eq!(at.epoch, 1, "{name}");
    assert!((3..10).contains(&at.step), "{name}: stopped at {at:?}");
    assert_eq!(progress(&part), (at.epoch, at.step), "{name}");
    assert!(!RunDir::new(part.path()).finished(), "{name}");
    assert_eq!(
        RunDir::new(part.path())
            .read_metrics()
            .unwrap()
            .epochs
            .len(),
        1
    );
    // A stop requested before any step: nothing runs, the checkpoint stays where it was.
    let stopped = Invocation {
        stop: Some(Arc::new(AtomicBool::new(true))),
        ..Invocation::new(true)
    };
    let again = run_as(runtime(), &c, &part, &stopped, &mut |_| {}).unwrap();
    assert!(
        matches!(again, Outcome::Interrupted(p) if p == at),
        "{name}: {again:?}"
    );
    let done = run_as(runtime(), &c, &part, &Invocation::new(true), &mut |_| {}).unwrap();
    assert!(matches!(done, Outcome::Finished(_)), "{name}: {done:?}");
    assert_same_checkpoint(&full, &part);
}

#[test]
fn a_stop_request_checkpoints_the_step_reached_and_resume_continues_exactly() {
    stop_and_resume("stop-seq", Runtime::sequential);
    stop_and_resume("stop-threads", || Runtime {
        workers: Workers::Threads,
        threads_per_worker: Some(1),
        ..Runtime::default()
    });
}
