//! The pipelined runtime computes what the sequential path computes (METHOD.md section 9): same seed,
//! same data order, same parameters after several steps; failures end the run promptly and name the node.

use std::path::Path;
use std::time::{Duration, Instant};

use groupwise::checkpoint;
use groupwise::parallel::{
    max_threads, Local, Placement, Runtime, TailPlacement, Topology, Workers,
};
use groupwise::plan::{AuxInput, Plan};
use groupwise::schedule::Schedule;
use groupwise::train::{self, Event, Invocation, Outcome, RunConfig, RunDir, Summary, TrainError};

use crate::common::{scratch, seeded_runs, synthetic_run};

fn config(blocks: usize, plan: &str, groups: i64, aux_input: AuxInput) -> RunConfig {
    RunConfig {
        blocks_per_stage: blocks,
        widths: [8, 8, 16, 16],
        aux_input,
        schedule: Schedule::Step {
            milestones: vec![1],
            gamma: 0.5,
        },
        seed: 11,
        loader_workers: 1,
        ..synthetic_run(plan, groups, 160)
    }
}

fn threads(depth: usize) -> Runtime {
    Runtime {
        workers: Workers::Threads,
        threads_per_worker: Some(1),
        pipeline_depth: depth,
        ..Runtime::default()
    }
}

/// Worker pools that cut the nodes differently: every node in one thread; the default (a thread per
/// node); two workers re-balanced by the step times measured in the first steps (mid-segment); as
/// many threads as allowed, by MACs; and costs that cut inside modules at odd places.
fn pools(topo: &Topology) -> Vec<(String, Runtime)> {
    let given = Placement::Given(
        (0..topo.len())
            .map(|id| (topo.name(id), 1.0 + (id % 3) as f64))
            .collect(),
    );
    vec![
        (
            "one worker".into(),
            Runtime {
                worker_threads: Some(1),
                ..threads(2)
            },
        ),
        ("default".into(), threads(2)),
        (
            "two workers by measured time".into(),
            Runtime {
                worker_threads: Some(2),
                ..threads(2)
            },
        ),
        (
            "most workers".into(),
            Runtime {
                worker_threads: Some(max_threads()),
                placement: Placement::Macs,
                ..threads(2)
            },
        ),
        (
            "uneven costs".into(),
            Runtime {
                worker_threads: Some(3),
                placement: given,
                ..threads(2)
            },
        ),
    ]
}

fn train_with(runtime: Runtime, c: &RunConfig, dir: &Path) -> Result<Summary, TrainError> {
    train_steps(runtime, c, dir, None)
        .map(|o| o.into_summary().expect("a finished run on the leader"))
}

/// Trains in a fresh directory, at most `max_steps` steps.
fn train_steps(
    runtime: Runtime,
    c: &RunConfig,
    dir: &Path,
    max_steps: Option<usize>,
) -> Result<Outcome, TrainError> {
    let _runs = seeded_runs();
    let invocation = Invocation {
        max_steps,
        ..Invocation::new(false)
    };
    train::run_on(
        &mut Local::new(runtime),
        c,
        &RunDir::new(dir),
        &invocation,
        &mut |_| {},
    )
}

/// Largest relative difference over every parameter, BN statistic and momentum buffer.
fn max_rel_diff(a: &Path, b: &Path) -> f64 {
    let ta = checkpoint::read(&a.join(RunDir::CHECKPOINT)).unwrap();
    let tb = checkpoint::read(&b.join(RunDir::CHECKPOINT)).unwrap();
    assert_eq!(
        ta.keys().collect::<Vec<_>>(),
        tb.keys().collect::<Vec<_>>(),
        "same tensors"
    );
    let mut worst = 0f64;
    for (name, x) in &ta {
        let y = &tb[name];
        let x = x.to_kind(tch::Kind::Double);
        let y = y.to_kind(tch::Kind::Double);
        let scale = x.abs().max().double_value(&[]).max(1e-12);
        let diff = (&x - &y).abs().max().double_value(&[]) / scale;
        worst = worst.max(diff);
    }
    worst
}

fn assert_equivalent(name: &str, c: &RunConfig) {
    let seq = scratch(&format!("{name}-seq"));
    let s = train_with(Runtime::sequential(), c, &seq).unwrap();
    let plan = c.build_plan(c.arch(3, 16, 4)).unwrap();
    let topo = Topology::new(&plan);
    let count = topo.len();
    for (pool, runtime) in pools(&topo) {
        let par = scratch(&format!("{name}-par-{}", pool.replace(' ', "-")));
        let p = train_with(runtime, c, &par).unwrap();
        assert_eq!(s.steps, p.steps);
        let diff = max_rel_diff(&seq, &par);
        assert!(
            diff <= 1e-5,
            "{name}, {pool}: threads vs sequential differ by {diff:e}"
        );
        assert_eq!(s.test, p.test, "{name}, {pool}: same test accuracies");
        // Per-node timings are in the metrics, one entry per node.
        let metrics = std::fs::read_to_string(par.join(RunDir::METRICS)).unwrap();
        let line: serde_json::Value =
            serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
        let nodes = line["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), count, "{name}, {pool}: a timing per node");
        for n in nodes {
            assert!(n["steps"].as_u64().unwrap() > 0);
            assert!(n["compute_seconds"].as_f64().unwrap() > 0.0);
            assert!(n["cpu_seconds"].as_f64().unwrap() > 0.0);
            let parts = ["forward_seconds", "backward_seconds", "update_seconds"]
                .map(|k| n[k].as_f64().unwrap());
            assert!(parts.iter().all(|&p| p > 0.0), "{name}, {pool}: {n}");
            assert!(parts.iter().sum::<f64>() <= n["compute_seconds"].as_f64().unwrap() + 1e-9);
        }
    }
}

#[test]
fn threads_match_sequential_k4_g2_stop_gradient_diversity() {
    assert_equivalent("k4g2", &config(5, "4", 2, AuxInput::StopGradient));
}

#[test]
fn threads_match_sequential_k2_g1_dgl() {
    assert_equivalent("k2g1", &config(5, "2", 1, AuxInput::StopGradient));
}

#[test]
fn threads_match_sequential_with_infopro_decoders() {
    // Every unit also reads the batch's images for its reconstruction target.
    let mut c = config(1, "2", 2, AuxInput::StopGradient);
    c.loss.infopro = Some(groupwise::local::InfoPro {
        reconstruction: [1.0, 0.5],
        classification: [1.0, 2.0],
        decoder_width: 4,
    });
    assert_equivalent("infopro", &c);
}

#[test]
fn threads_match_sequential_k1_g2_gradient_from_head() {
    // No boundary: the G columns are nodes of their own and train through the head's gradient.
    assert_equivalent("k1g2", &config(1, "1", 2, AuxInput::StopGradient));
}

#[test]
fn threads_match_sequential_end_to_end_and_partial_windows() {
    assert_equivalent("k1g1", &config(1, "1", 1, AuxInput::StopGradient));
    assert_equivalent(
        "partial",
        &config(1, "1:0,2:0,3:0", 4, AuxInput::Partial(0.5)),
    );
    assert_equivalent("isolated", &config(1, "1:0,3:0", 2, AuxInput::Isolated));
}

#[test]
fn pipeline_depth_does_not_change_the_result() {
    let c = config(1, "1:0,2:0,3:0", 2, AuxInput::StopGradient);
    let a = scratch("depth1");
    let b = scratch("depth4");
    train_steps(threads(1), &c, &a, Some(7)).unwrap();
    train_steps(threads(4), &c, &b, Some(7)).unwrap();
    assert_eq!(max_rel_diff(&a, &b), 0.0);
}

#[test]
fn topology_links_every_node() {
    let c = config(5, "4", 2, AuxInput::StopGradient);
    let plan = Plan::new(c.arch(3, 16, 4), "4", 2, AuxInput::StopGradient).unwrap();
    let t = Topology::new(&plan);
    assert_eq!(t.len(), 4 * 2 + 1);
    assert_eq!(t.name(t.unit(2, 1)).to_string(), "m2.g1");
    assert_eq!(t.name(t.head()).to_string(), "head");
    assert_eq!(t.inputs(t.unit(0, 1)), None);
    assert_eq!(t.inputs(t.unit(1, 0)), Some(vec![0, 1]));
    assert_eq!(t.inputs(t.head()), Some(vec![6, 7]));
    assert_eq!(t.consumers(t.unit(3, 0)), vec![t.head()]);
    assert_eq!(t.slice_readers(1, 0), vec![1]);
    let k1 = Plan::new(c.arch(3, 16, 4), "1", 2, AuxInput::StopGradient).unwrap();
    let t1 = Topology::new(&k1);
    assert_eq!(t1.tail, TailPlacement::Separate);
    assert_eq!(t1.len(), 3);
    assert_eq!(t1.name(t1.tail(1)).to_string(), "m0.g1");
    let iso = Plan::new(c.arch(3, 16, 4), "1:0,3:0", 2, AuxInput::Isolated).unwrap();
    assert!(Topology::new(&iso).slice_readers(0, 0).is_empty());
}

#[test]
fn a_failing_node_ends_the_run_promptly_and_the_checkpoint_resumes() {
    let c = config(1, "1:0,2:0,3:0", 2, AuxInput::StopGradient);
    let clean = scratch("fault-clean");
    train_with(threads(2), &c, &clean).unwrap();
    // The sequential path honours the fault too (it used to ignore it and train on).
    for (what, runtime) in [
        ("threads", threads(2)),
        ("sequential", Runtime::sequential()),
    ] {
        let dir = scratch("fault");
        // Epoch 1 has 5 steps; node m1.g0 fails on step 8, in epoch 2.
        let faulty = Runtime {
            fault: Some("m1.g0@8".parse().unwrap()),
            ..runtime
        };
        let start = Instant::now();
        let err = train_with(faulty, &c, &dir).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(60));
        let msg = err.to_string();
        assert!(
            msg.contains("node m1.g0 failed at step 8: injected fault (--inject-fault)"),
            "{what}: {msg}"
        );
        let progress = checkpoint::read_progress(&dir.join(RunDir::CHECKPOINT)).unwrap();
        assert_eq!((progress.epoch, progress.step), (1, 0), "{what}");
        let resumed = {
            let _runs = seeded_runs();
            train::run_on(
                &mut Local::new(threads(2)),
                &c,
                &RunDir::new(dir.path()),
                &Invocation::new(true),
                &mut |_| {},
            )
        }
        .unwrap()
        .into_summary()
        .unwrap();
        assert_eq!(resumed.epochs, 2);
        // The resumed run ends where an uninterrupted one does.
        assert!(max_rel_diff(&dir, &clean) <= 1e-5, "{what}");
    }
}

/// `--threads-per-worker` with `--workers sequential` used to be ignored: it is the intra-op threads
/// of the thread that trains every node, during its steps; evaluation keeps `--threads`.
#[test]
fn sequential_path_trains_with_threads_per_worker() {
    let c = RunConfig {
        threads: 1,
        ..config(1, "2", 2, AuxInput::StopGradient)
    };
    for (per_worker, want) in [(Some(3), 3), (None, 1)] {
        let runtime = Runtime {
            threads_per_worker: per_worker,
            ..Runtime::sequential()
        };
        let dir = scratch("sequential-threads");
        let (mut steps, mut after) = (Vec::new(), Vec::new());
        let _runs = seeded_runs();
        // The sequential path reports each step from the thread that ran it.
        train::run_on(
            &mut Local::new(runtime),
            &c,
            &RunDir::new(dir.path()),
            &Invocation::new(false),
            &mut |e| match e {
                Event::Step { .. } => steps.push(tch::get_num_threads()),
                Event::EpochEnd(_) => after.push(tch::get_num_threads()),
                _ => {}
            },
        )
        .unwrap();
        assert!(!steps.is_empty() && !after.is_empty());
        assert!(
            steps.iter().all(|&t| t == want),
            "{per_worker:?}: {steps:?}"
        );
        assert!(after.iter().all(|&t| t == 1), "{per_worker:?}: {after:?}");
    }
}

/// Library users get the runtime's checks too: `Layout::new` for pipelined workers, the cluster's
/// start for the sequential path.
#[test]
fn runtime_settings_are_checked_when_the_cluster_starts() {
    let c = config(1, "2", 2, AuxInput::StopGradient);
    let deep = scratch("deep-pipeline");
    let err = train_steps(threads(100_000_000), &c, &deep, Some(1))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--pipeline-depth 100000000 must be between 1 and 64"),
        "{err}"
    );
    let gpus = Runtime {
        devices: vec![0],
        ..Runtime::sequential()
    };
    let cpu = scratch("gpus-on-cpu");
    let err = train_steps(gpus, &c, &cpu, Some(1))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--devices 0 places nodes on GPUs and needs --device cuda"),
        "{err}"
    );
    let nowhere = Runtime {
        fault: Some("m7.g0@1".parse().unwrap()),
        ..Runtime::sequential()
    };
    let dir = scratch("fault-nowhere");
    let err = train_with(nowhere, &c, &dir).unwrap_err().to_string();
    assert!(
        err.contains("fault spec m7.g0@1: no node m7.g0 (nodes: m0.g0, "),
        "{err}"
    );
}

#[test]
fn a_threads_intra_op_count_holds_whatever_another_thread_sets() {
    // libtorch initialises a thread's count at its first op from the count last set anywhere: a
    // worker that set 1 and then saw a concurrent run set 2 used to train with 2 threads, which
    // changes the kernels' reduction order (a pipeline-depth run once differed by 6e-7).
    let (set, is_set) = std::sync::mpsc::channel();
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        groupwise::device::set_intra_op_threads(1);
        set.send(()).unwrap();
        wait.recv().unwrap();
        tch::get_num_threads()
    });
    is_set.recv().unwrap();
    std::thread::spawn(|| tch::set_num_threads(2))
        .join()
        .unwrap();
    go.send(()).unwrap();
    assert_eq!(worker.join().unwrap(), 1);
}
