//! `plan --profile --copies`, `plan --simulate` and `plan --search` on a tiny ResNet's real profiles.

use std::path::Path;

use serde_json::Value;

use crate::common::{groupwise, output, scratch};

/// ResNet-8 with narrow widths on 8x8x3 images, 10 classes.
const MODEL: [&str; 14] = [
    "plan",
    "--preset",
    "smoke",
    "--depth",
    "8",
    "--widths",
    "4,4,8,8",
    "--in-channels",
    "3",
    "--image-size",
    "8",
    "--classes",
    "10",
    "--json",
];

/// Profiles plan `k` with `g` groups (and `extra` flags; batch 4 unless they say) into `path`.
fn profile(k: &str, g: &str, extra: &[&str], path: &Path) {
    let batch: &[&str] = if extra.contains(&"--batch") {
        &[]
    } else {
        &["--batch", "4"]
    };
    let (ok, stdout, stderr) = output(
        groupwise()
            .args(MODEL)
            .args(["--plan", k, "--groups", g, "--profile"])
            .args(["--steps", "2", "--warmup", "1"])
            .args(batch)
            .args(extra),
    );
    assert!(ok, "{stderr}");
    std::fs::write(path, stdout).unwrap();
}

fn json(args: &[&str]) -> Value {
    let (ok, stdout, stderr) = output(groupwise().args(MODEL).args(args));
    assert!(ok, "{args:?}: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn simulate_predicts_from_a_profile_and_says_what_is_wrong() {
    let dir = scratch("simulate");
    let p = dir.path().join("k2g2.json");
    profile("2", "2", &["--copies", "2"], &p);
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    assert_eq!(file["copies"], 2);
    assert_eq!(file["aux_input"]["kind"], "stop-gradient");
    let total: f64 = file["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["seconds_per_step"].as_f64().unwrap())
        .sum();
    let ps = p.to_str().unwrap();
    let rows = json(&[
        "--plan",
        "2",
        "--groups",
        "2",
        "--simulate",
        ps,
        "--workers",
        "1,2,64",
    ]);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    // One worker runs every node in turn: the sum of the profile, no waiting.
    let one = &rows[0];
    let step = one["steady_step_seconds"].as_f64().unwrap();
    assert!((step - total).abs() < 1e-6 * total, "{step} vs {total}");
    assert!((one["speedup_vs_sequential"].as_f64().unwrap() - 1.0).abs() < 1e-6);
    assert!(one["speedup_vs_end_to_end"].as_f64().unwrap() > 0.0);
    // Two workers gain, never more than 2x; 64 workers use one per node (5: 2 x 2 units and the head).
    let two = rows[1]["speedup_vs_sequential"].as_f64().unwrap();
    assert!(two > 1.0 && two <= 2.0 + 1e-9, "{two}");
    assert_eq!(rows[2]["workers_used"], 5);
    // MPI: a slow link costs time.
    let slow = json(&[
        "--plan",
        "2",
        "--groups",
        "2",
        "--simulate",
        ps,
        "--workers",
        "2",
        "--runtime",
        "mpi",
        "--link",
        "100000,0.000001",
    ]);
    assert!(
        slow[0]["steady_step_seconds"].as_f64().unwrap()
            > rows[1]["steady_step_seconds"].as_f64().unwrap()
    );
    assert!(slow[0]["comm_share"].as_f64().unwrap() > 0.0);
    // The Gantt chart.
    let png = dir.path().join("gantt.png");
    let (ok, _, stderr) = output(
        groupwise()
            .args(MODEL)
            .args([
                "--plan",
                "2",
                "--groups",
                "2",
                "--simulate",
                ps,
                "--workers",
                "2",
            ])
            .arg("--gantt")
            .arg(&png),
    );
    assert!(ok, "{stderr}");
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
    // What is wrong, named: another plan's profile, a missing file, a bad link, bad speeds.
    for (args, says) in [
        (
            vec!["--plan", "2", "--groups", "1", "--simulate", ps],
            "profiles plan 2 with G=2, not this plan (5 nodes, this plan has 3)",
        ),
        (
            vec![
                "--plan",
                "2",
                "--groups",
                "2",
                "--simulate",
                "/nonexistent.json",
            ],
            "/nonexistent.json",
        ),
        (
            vec![
                "--plan",
                "2",
                "--groups",
                "2",
                "--simulate",
                ps,
                "--link",
                "fast",
            ],
            "LATENCY_US,GBYTES_PER_S",
        ),
        (
            vec![
                "--plan",
                "2",
                "--groups",
                "2",
                "--simulate",
                ps,
                "--workers",
                "3",
                "--speeds",
                "1,2",
            ],
            "--speeds has 2 values for 3 workers",
        ),
        (
            vec![
                "--plan",
                "2",
                "--groups",
                "2",
                "--simulate",
                ps,
                "--workers",
                "0",
            ],
            "at least 1",
        ),
    ] {
        let (ok, _, stderr) = output(groupwise().args(MODEL).args(&args));
        assert!(!ok && stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[test]
fn search_ranks_the_profiled_configurations_and_picks_by_accuracy() {
    let dir = scratch("search");
    let grid = dir.path().join("grid");
    std::fs::create_dir(&grid).unwrap();
    profile("1", "1", &[], &grid.join("e2e.json"));
    profile("2", "2", &["--no-reference"], &grid.join("k2g2.json"));
    profile(
        "2",
        "2",
        &["--no-reference", "--aux-input", "isolated"],
        &grid.join("k2g2i.json"),
    );
    let g = grid.to_str().unwrap();
    let plot = dir.path().join("speedup.png");
    let rows = json(&[
        "--search",
        g,
        "--workers",
        "2",
        "--plot",
        plot.to_str().unwrap(),
    ]);
    assert!(std::fs::read(&plot).unwrap().starts_with(b"\x89PNG"));
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    // Sorted by predicted step; end-to-end gains nothing from a second worker.
    let steps: Vec<f64> = rows
        .iter()
        .map(|r| r["predicted_step_seconds"].as_f64().unwrap())
        .collect();
    assert!(steps.windows(2).all(|w| w[0] <= w[1]), "{steps:?}");
    let e2e = rows.iter().find(|r| r["groups"] == 1).unwrap();
    assert!((e2e["speedup_vs_end_to_end"].as_f64().unwrap() - 1.0).abs() < 1e-6);
    assert!(rows.iter().any(|r| r["aux_input"] == "isolated"));
    // The fastest configuration is on the Pareto front; the end-to-end one has the largest node.
    assert_eq!(rows[0]["pareto"], true);
    assert!(rows
        .iter()
        .all(|r| r["max_node_macs"].as_u64() <= e2e["max_node_macs"].as_u64()));
    // Two workers on one core: no configuration is faster than on two cores, and the default
    // runtime's thread per node is among the placements tried.
    let shared = json(&["--search", g, "--workers", "2", "--cores", "1"]);
    let shared = shared.as_array().unwrap();
    assert_eq!(shared.len(), 3);
    for r in shared {
        assert_eq!(r["cores"], 1);
        assert!(["time", "MACs", "node"].contains(&r["placed_by"].as_str().unwrap()));
        let alone = rows
            .iter()
            .find(|o| o["plan"] == r["plan"] && o["aux_input"] == r["aux_input"])
            .unwrap();
        let (one, two) = (
            r["predicted_step_seconds"].as_f64().unwrap(),
            alone["predicted_step_seconds"].as_f64().unwrap(),
        );
        assert!(one >= two * 0.999, "{r} vs {alone}");
    }
    let (ok, _, stderr) = output(groupwise().args(MODEL).args(["--cores", "2"]));
    assert!(!ok && stderr.contains("--cores is for"), "{stderr}");
    // Accuracy from a report's results.csv: the fastest configuration reaching the target.
    let csv = dir.path().join("results.csv");
    std::fs::write(
        &csv,
        "run,plan,groups,aux_input,head_accuracy\n\
         a,1,1,stop-gradient,0.91\n\
         b,2,2,stop-gradient,0.86\n\
         c,2,2,stop-gradient,0.88\n\
         d,2,2,isolated,-\n",
    )
    .unwrap();
    let (ok, stdout, stderr) = output(
        groupwise()
            .args(&MODEL[..13])
            .args(["--search", g, "--workers", "2", "--accuracy"])
            .arg(&csv)
            .args(["--target-accuracy", "90"]),
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("87.00"), "mean of b and c: {stdout}");
    assert!(
        stdout.contains("fastest at >= 90% accuracy on 2 workers: e2e"),
        "{stdout}"
    );
    assert!(stderr.contains("searched 3 configurations"), "{stderr}");
    // An empty directory and a CSV without the columns are clear errors.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let (ok, _, stderr) = output(groupwise().args(MODEL).arg("--search").arg(&empty));
    assert!(!ok && stderr.contains("no profiles"), "{stderr}");
    std::fs::write(&csv, "run,plan\na,1\n").unwrap();
    let (ok, _, stderr) = output(
        groupwise()
            .args(MODEL)
            .args(["--search", g, "--accuracy"])
            .arg(&csv),
    );
    assert!(!ok && stderr.contains("no column 'groups'"), "{stderr}");
}

/// Checks a run's `trace.json`: every node on exactly one worker, `processes` processes, the
/// epoch's last `steps` steps (of `last`) with every node computing in each, and a worker's spans
/// never overlapping (a worker is one thread).
pub(crate) fn check_trace(run: &Path, processes: usize, (steps, last): (usize, usize)) -> Value {
    let path = run.join("trace.json");
    let t: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap();
    let workers = t["workers"].as_array().unwrap();
    let mut nodes: Vec<&str> = workers
        .iter()
        .flat_map(|w| w["nodes"].as_array().unwrap())
        .map(|n| n.as_str().unwrap())
        .collect();
    let count = nodes.len();
    nodes.sort_unstable();
    nodes.dedup();
    assert_eq!(nodes.len(), count, "a node on two workers: {t}");
    let mut ranks: Vec<u64> = workers
        .iter()
        .map(|w| w["process"].as_u64().unwrap())
        .collect();
    ranks.dedup();
    assert_eq!(ranks.len(), processes, "{t}");
    let spans = t["spans"].as_array().unwrap();
    for step in last + 1 - steps..=last {
        for node in &nodes {
            assert!(
                spans
                    .iter()
                    .any(|s| s["node"] == *node && s["step"] == step as u64),
                "node {node} has no span in step {step}"
            );
        }
    }
    assert!(spans
        .iter()
        .all(|s| (last + 1 - steps..=last).contains(&(s["step"].as_u64().unwrap() as usize))));
    for w in 0..workers.len() {
        let mut mine: Vec<(f64, f64)> = spans
            .iter()
            .filter(|s| s["worker"] == w as u64)
            .map(|s| (s["start"].as_f64().unwrap(), s["end"].as_f64().unwrap()))
            .collect();
        mine.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(mine.iter().all(|(a, b)| a <= b));
        assert!(
            mine.windows(2).all(|p| p[1].0 >= p[0].1 - 1e-6),
            "worker {w}'s spans overlap: {mine:?}"
        );
    }
    t
}

#[test]
fn simulate_beside_a_real_run_and_its_trace() {
    let dir = scratch("simulate-trace");
    let run = dir.path().join("run");
    let train = |run: &Path, mode: &[&str]| {
        let (ok, _, stderr) = output(
            groupwise()
                .args(["train", "--preset", "smoke", "--depth", "8"])
                .args(["--widths", "4,4,8,8", "--synthetic", "8,3,10,48,8"])
                .args(["--plan", "2", "--groups", "2", "--batch-size", "8"])
                .args(["--epochs", "1", "--quiet", "--run-dir"])
                .arg(run)
                .args(mode),
        );
        assert!(ok, "{stderr}");
    };
    // 6 steps: the trace holds the last 4 (placed by MACs: no measuring steps on one worker first).
    train(
        &run,
        &[
            "--workers",
            "threads",
            "--worker-threads",
            "2",
            "--placement",
            "macs",
        ],
    );
    let t = check_trace(&run, 1, (4, 6));
    assert_eq!(t["steps"], 6);
    assert_eq!(t["runtime"], "threads");
    let p = dir.path().join("k2g2.json");
    profile("2", "2", &["--batch", "8"], &p);
    // `plan --simulate PROFILE --trace RUN` with the model flags `model` and `extra`.
    let beside = |run: &Path, model: &[&str], profile: &Path, extra: &[&std::ffi::OsStr]| {
        output(
            groupwise()
                .args(model)
                .args(["--plan", "2", "--groups", "2", "--simulate"])
                .arg(profile)
                .arg("--trace")
                .arg(run)
                .args(extra),
        )
    };
    let png = dir.path().join("beside.png");
    let gantt = [std::ffi::OsStr::new("--gantt"), png.as_os_str()];
    let (ok, stdout, stderr) = beside(&run, &MODEL[..13], &p, &gantt);
    assert!(ok, "{stderr}");
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
    assert!(stdout.contains("ms per step measured"), "{stdout}");
    // The whole epoch from metrics.jsonl; the run's workers share the cores it recorded.
    assert!(stdout.contains("the whole epoch"), "{stdout}");
    let cores = t["cores"].as_u64().expect("trace.json records the cores");
    assert!(
        stdout.contains(&format!("sharing {cores} cores")),
        "{stdout}"
    );
    for node in ["m0.g0", "m0.g1", "m1.g0", "m1.g1", "head"] {
        assert!(stdout.contains(node), "{node}: {stdout}");
    }
    // The run's own runtime, depth and epoch are simulated: those flags are refused beside --trace.
    let steps = ["--sim-steps", "5"].map(std::ffi::OsStr::new);
    let (ok, _, stderr) = beside(&run, &MODEL[..13], &p, &steps);
    assert!(!ok && stderr.contains("cannot be used with"), "{stderr}");
    // What is wrong, named: a sequential run has no trace; another input shape; another batch.
    let seq = dir.path().join("seq");
    train(&seq, &["--workers", "sequential"]);
    assert!(!seq.join("trace.json").exists());
    let (ok, _, stderr) = beside(&seq, &MODEL[..13], &p, &[]);
    assert!(!ok && stderr.contains("has no trace.json"), "{stderr}");
    let mut other = MODEL[..13].to_vec();
    other[10] = "16";
    let p16 = dir.path().join("k2g2-16.json");
    let (ok, stdout, stderr) = output(
        groupwise()
            .args(&other)
            .args(["--plan", "2", "--groups", "2", "--profile", "--json"])
            .args(["--steps", "1", "--warmup", "0", "--batch", "8"]),
    );
    assert!(ok, "{stderr}");
    std::fs::write(&p16, stdout).unwrap();
    let (ok, _, stderr) = beside(&run, &other, &p16, &[]);
    assert!(
        !ok && stderr.contains("another architecture or input shape"),
        "{stderr}"
    );
    let p4 = dir.path().join("k2g2-b4.json");
    profile("2", "2", &[], &p4);
    let (ok, _, stderr) = beside(&run, &MODEL[..13], &p4, &[]);
    assert!(
        !ok && stderr.contains("the run trained batches of 8 images"),
        "{stderr}"
    );
}
