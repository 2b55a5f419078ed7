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

#[test]
fn resume_drops_a_cut_short_last_metrics_line_and_refuses_a_corrupt_one() {
    let (full, part) = (scratch("metrics-full"), scratch("metrics-part"));
    let c = tiny("2", 2);
    run(&c, &full, false).unwrap();
    let four_steps = Invocation {
        max_steps: Some(4),
        ..Invocation::new(false)
    };
    run_as(&c, &part, &four_steps).unwrap();
    // Killed while appending epoch 2's line: its JSON ends early, with no newline.
    let metrics = part.join(RunDir::METRICS);
    let line1 = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(line1.lines().count(), 1);
    let cut = &line1[..line1.len() / 2];
    std::fs::write(&metrics, format!("{line1}{cut}")).unwrap();
    // The report's reading and the resume agree: line 2 is skipped, then dropped.
    let log = RunDir::new(part.path()).read_metrics().unwrap();
    assert_eq!((log.epochs.len(), log.cut_short), (1, Some(2)));
    run(&c, &part, true).unwrap();
    let read = |dir: &Path| RunDir::new(dir).read_metrics().unwrap();
    let epochs: Vec<usize> = read(&part).epochs.iter().map(|m| m.epoch).collect();
    assert_eq!(epochs, [1, 2]);
    assert_eq!(read(&part).cut_short, None);
    assert_same(&params(&full), &params(&part));

    // A line that does not parse before the last is corruption, not a kill: both refuse it,
    // naming the file and the line.
    let (good, _) = line1.split_at(line1.len() - 1);
    std::fs::write(&metrics, format!("{good}\n{{\"epoch\": 1}}\n{good}\n")).unwrap();
    let want = format!(
        "{}: not a groupwise metrics line: line 2: ",
        metrics.display()
    );
    let err = RunDir::new(part.path())
        .read_metrics()
        .unwrap_err()
        .to_string();
    assert!(err.starts_with(&want), "`{err}` lacks `{want}`");
    let err = RunDir::new(part.path())
        .keep_metrics_through(1)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with(&want), "`{err}` lacks `{want}`");
    // So is a complete last line that is not metrics.
    std::fs::write(&metrics, format!("{good}\nnot json\n")).unwrap();
    let err = RunDir::new(part.path())
        .read_metrics()
        .unwrap_err()
        .to_string();
    assert!(err.contains("metrics line: line 2: "), "{err}");
}
