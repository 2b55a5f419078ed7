//! End-to-end runs on synthetic data: files, determinism, resume, special cases, bad input.

use std::path::Path;

use groupwise::checkpoint;
use groupwise::data::DatasetKind;
use groupwise::train::TrainError;
use groupwise::train::{self, EpochMetrics, Invocation, Outcome, RunConfig, RunDir, Summary};

use crate::common::{scratch, seeded_runs, synthetic_run};

fn tiny(plan: &str, groups: i64) -> RunConfig {
    synthetic_run(plan, groups, 96)
}

/// Trains (`resume`: continues) the run to its end; its summary.
fn run(config: &RunConfig, dir: &Path, resume: bool) -> Result<Summary, TrainError> {
    run_as(config, dir, &Invocation::new(resume))
        .map(|o| o.into_summary().expect("the run finishes"))
}

fn run_as(config: &RunConfig, dir: &Path, invocation: &Invocation) -> Result<Outcome, TrainError> {
    let _runs = seeded_runs();
    train::run(config, dir, invocation, &mut |_| {})
}

fn params(dir: &Path) -> Vec<(String, tch::Tensor)> {
    checkpoint::read(&dir.join(RunDir::CHECKPOINT))
        .unwrap()
        .into_iter()
        .collect()
}

fn assert_same(a: &[(String, tch::Tensor)], b: &[(String, tch::Tensor)]) {
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        assert!(ta.equal(tb), "tensor {na} differs");
    }
}

#[test]
fn one_epoch_smoke_run_writes_the_run_directory() {
    let dir = scratch("smoke");
    let mut c = tiny("4", 2);
    c.epochs = 1;
    let summary = run(&c, &dir, false).unwrap();
    for f in [
        RunDir::CONFIG,
        RunDir::METRICS,
        RunDir::CHECKPOINT,
        RunDir::SUMMARY,
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let replay = RunDir::new(dir.path()).read_config().unwrap();
    assert_eq!(replay, c);
    let lines: Vec<EpochMetrics> = std::fs::read_to_string(dir.join(RunDir::METRICS))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    let m = &lines[0];
    assert_eq!(m.train_units.len(), 4 * 2);
    assert!(m
        .train_units
        .iter()
        .all(|u| u.loss.is_finite() && u.diversity > 0.0));
    let test = m.test.as_ref().unwrap();
    assert_eq!(test.units.len(), 4);
    assert_eq!(test.images, 40);
    assert_eq!(summary.test, *test);
    assert_eq!(summary.steps, 3);
}

#[test]
fn same_seed_gives_identical_weights() {
    let (a, b) = (scratch("det-a"), scratch("det-b"));
    let c = tiny("2", 2);
    let sa = run(&c, &a, false).unwrap();
    let sb = run(&c, &b, false).unwrap();
    assert_eq!(sa.test, sb.test);
    assert_same(&params(&a), &params(&b));
}

#[test]
fn resume_continues_exactly_where_the_run_stopped() {
    let (full, part) = (scratch("resume-full"), scratch("resume-part"));
    let c = tiny("4", 2);
    run(&c, &full, false).unwrap();
    // Stop in the middle of epoch 2 (3 steps per epoch), then resume to the end.
    let four = Invocation {
        max_steps: Some(4),
        ..Invocation::new(false)
    };
    let stopped = run_as(&c, &part, &four).unwrap();
    assert!(
        matches!(stopped, Outcome::StepLimit(p) if (p.epoch, p.step) == (1, 1)),
        "{stopped:?}"
    );
    let p = checkpoint::read_progress(&part.join(RunDir::CHECKPOINT)).unwrap();
    assert_eq!((p.epoch, p.step), (1, 1));
    // Not finished: no summary until the last epoch.
    assert!(!part.join(RunDir::SUMMARY).exists());
    run(&c, &part, true).unwrap();
    assert_eq!(RunDir::new(part.path()).read_config().unwrap(), c);
    let mut other = c.clone();
    other.lr = 0.1;
    let err = run(&other, &part, true).unwrap_err().to_string();
    assert!(err.contains("settings differ"), "{err}");
    assert_same(&params(&full), &params(&part));
}

#[test]
fn end_to_end_and_dgl_special_cases() {
    // K=1, G=1: no unit, only the head's column: plain end-to-end training.
    let dir = scratch("e2e");
    let mut c = tiny("1", 1);
    c.epochs = 1;
    run(&c, &dir, false).unwrap();
    let names: Vec<String> = params(&dir).into_iter().map(|(n, _)| n).collect();
    assert!(names.iter().any(|n| n.starts_with("m0.g0.stem.")));
    assert!(!names.iter().any(|n| n.contains(".aux.")));
    // G=1: DGL, one auxiliary classifier per boundary and no diversity term.
    let dir = scratch("dgl");
    let mut c = tiny("2", 1);
    c.epochs = 1;
    run(&c, &dir, false).unwrap();
    let m: EpochMetrics = serde_json::from_str(
        std::fs::read_to_string(dir.join(RunDir::METRICS))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(m.train_units.len(), 2);
    assert!(m.train_units.iter().all(|u| u.diversity == 0.0));
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = scratch("bad");
    let err = run(&tiny("4", 3), &dir, false).unwrap_err().to_string();
    assert!(err.contains("--groups 3 does not divide width 4"), "{err}");
    // A plan is parsed once, where it is read (a flag, a config file).
    let err = "nonsense"
        .parse::<groupwise::plan::PlanSpec>()
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown --plan 'nonsense'"), "{err}");
    let mut c = tiny("2", 2);
    c.data.kind = DatasetKind::Cifar10;
    c.data.path = Some(dir.join("nowhere"));
    let err = run(&c, &dir, false).unwrap_err().to_string();
    assert!(err.contains("nowhere"), "{err}");
    // A corrupt checkpoint of a run to resume names the file and loses nothing else.
    let good = scratch("corrupt");
    let mut c = tiny("2", 2);
    c.epochs = 1;
    let two = Invocation {
        max_steps: Some(2),
        ..Invocation::new(false)
    };
    run_as(&c, &good, &two).unwrap();
    let ckpt = good.join(RunDir::CHECKPOINT);
    let bytes = std::fs::read(&ckpt).unwrap();
    std::fs::write(&ckpt, &bytes[..bytes.len() / 2]).unwrap();
    let err = run(&c, &good, true).unwrap_err().to_string();
    assert!(err.contains("checkpoint.safetensors"), "{err}");
    assert!(good.join(RunDir::CONFIG).is_file());
    // A run is never overwritten by accident.
    std::fs::write(&ckpt, &bytes).unwrap();
    let err = run(&c, &good, false).unwrap_err().to_string();
    assert!(err.contains("--resume"), "{err}");
}
