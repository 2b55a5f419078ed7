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

/// Profiles plan `k` with `g` groups (and `extra` flags) into `path`.
fn profile(k: &str, g: &str, extra: &[&str], path: &Path) {
    let (ok, stdout, stderr) = output(
        groupwise()
            .args(MODEL)
            .args(["--plan", k, "--groups", g, "--profile"])
            .args(["--steps", "2", "--warmup", "1", "--batch", "4"])
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
