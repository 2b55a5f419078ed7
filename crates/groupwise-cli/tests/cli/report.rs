//! `groupwise report` on tiny synthetic run directories (hand-written metrics and summaries, so every
//! number in the output is known), and every preset's plan against the paper's costs.

use std::path::Path;

use serde_json::{json, Value};

use groupwise_cli::{presets, report};

use crate::common::{cell, groupwise, output, read_csv, scratch};

/// Whether an SVG draws `text` (plotters writes a `<text>` element's content on a line of its own).
fn has_text(svg: &str, text: &str) -> bool {
    svg.lines().any(|l| l.trim() == text) || svg.contains(&format!(">{text}<"))
}

/// The smoke preset's config as JSON (what `groupwise presets --show smoke --json` prints).
fn smoke_config() -> Value {
    serde_json::to_value(presets::preset("smoke").unwrap()).unwrap()
}

/// The max node MACs of the smoke preset with another plan and G (what `groupwise plan` reports).
fn max_node_macs(plan: &str, groups: i64) -> u64 {
    let mut c = presets::preset("smoke").unwrap();
    c.plan = plan.parse().unwrap();
    c.groups = groups;
    c.declared_plan().unwrap().figure_max_node_macs()
}

fn eval(head: f64, units: Value) -> Value {
    let boundaries: Vec<f64> = units
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let g = g.as_array().unwrap();
            g.iter().map(|a| a.as_f64().unwrap()).sum::<f64>() / g.len() as f64
        })
        .collect();
    json!({"head": head, "ensemble": head - 0.01, "units": units, "boundaries": boundaries, "images": 64})
}

/// A run directory with `epochs` metric lines, each of `steps` steps in `secs` seconds, test head
/// accuracy `acc[e]`; `summary` when finished.
#[allow(clippy::too_many_arguments)]
fn make_run(
    root: &Path,
    name: &str,
    plan: &str,
    groups: i64,
    steps: usize,
    secs: f64,
    acc: &[f64],
    units: Value,
    finished: bool,
) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let mut c = smoke_config();
    c["plan"] = json!(plan);
    c["groups"] = json!(groups);
    c["epochs"] = json!(2);
    std::fs::write(dir.join("config.json"), c.to_string()).unwrap();
    let mut lines = String::new();
    for (e, a) in acc.iter().enumerate() {
        let m = json!({
            "epoch": e + 1, "lr": 0.05, "steps": steps, "train_module_loss": [],
            "train_units": [], "train_head_loss": 1.0 / (e + 1) as f64,
            "train_head_accuracy": 0.5, "test": eval(*a, units.clone()),
            "train_seconds": secs, "images_per_second": 100.0, "elapsed_seconds": secs * (e + 1) as f64,
        });
        lines.push_str(&format!("{m}\n"));
    }
    std::fs::write(dir.join("metrics.jsonl"), lines).unwrap();
    if finished {
        let s = json!({
            "epochs": acc.len(), "steps": steps * acc.len(), "test": eval(*acc.last().unwrap(), units),
            "max_node_macs": 1, "inference_macs": 1, "params": 1, "images_per_second": 100.0,
            "wall_seconds": 10.0, "step_seconds": secs / steps as f64, "runtime": "threads",
        });
        std::fs::write(dir.join("summary.json"), s.to_string()).unwrap();
    }
}

/// Edits a run's `config.json`.
fn edit_config(run: &Path, edit: impl FnOnce(&mut Value)) {
    let path = run.join("config.json");
    let mut c: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut c);
    std::fs::write(&path, c.to_string()).unwrap();
}

/// Gives every metrics line of a run the per-node times `nodes` (a `NodeTiming` list as JSON).
fn set_nodes(run: &Path, nodes: Value) {
    let path = run.join("metrics.jsonl");
    let lines: String = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| {
            let mut m: Value = serde_json::from_str(l).unwrap();
            m["nodes"] = nodes.clone();
            format!("{m}\n")
        })
        .collect();
    std::fs::write(&path, lines).unwrap();
}

/// A node's timing entry of one epoch, as `metrics.jsonl` writes it; `cpu` None as written before
/// CPU time was measured (no `cpu_seconds` field).
fn node(name: &str, steps: usize, compute: f64, cpu: Option<f64>) -> Value {
    let mut n = json!({
        "node": name, "rank": 0, "steps": steps, "compute_seconds": compute,
        "wait_seconds": 0.01, "comm_seconds": 0.001, "bytes_sent": 1000,
    });
    if let Some(cpu) = cpu {
        n["cpu_seconds"] = json!(cpu);
    }
    n
}

#[test]
fn report_of_synthetic_runs_has_the_known_numbers_and_plots() {
    let root = scratch("report-synthetic");
    let root = root.path();
    let runs = root.join("runs");
    // e2e: 0.4 s/step; gn: 0.1 s/step (4x); dgl: unfinished, 1 of 2 epochs.
    make_run(
        &runs,
        "a-e2e",
        "1",
        1,
        10,
        4.0,
        &[0.80, 0.915],
        json!([]),
        true,
    );
    make_run(
        &runs,
        "b-dgl",
        "2",
        1,
        10,
        2.0,
        &[0.75],
        json!([[0.5], [0.7]]),
        false,
    );
    make_run(
        &runs,
        "c-gn",
        "2",
        2,
        10,
        1.0,
        &[0.6, 0.8],
        json!([[0.4, 0.5], [0.6, 0.65]]),
        true,
    );
    // Per-node times of every epoch (10 steps): gn's slowest node m0.g1 computes 0.8 s per epoch,
    // 0.08 s/step; its nodes' CPU seconds add up to 1.3 per epoch, 0.13 s/step. e2e's metrics were
    // written before CPU time was measured (one sequential node, 3.9 s per epoch); dgl's have no
    // per-node times at all.
    set_nodes(
        &runs.join("c-gn"),
        json!([
            node("m0.g0", 10, 0.6, Some(0.5)),
            node("m0.g1", 10, 0.8, Some(0.7)),
            node("head", 10, 0.2, Some(0.1)),
        ]),
    );
    set_nodes(&runs.join("a-e2e"), json!([node("all", 10, 3.9, None)]));
    let out = root.join("report");
    let (ok, _, stderr) = output(groupwise().arg("report").arg(&runs).arg("--out").arg(&out));
    assert!(ok, "{stderr}");

    // CSV: raw numbers, speed-ups against the end-to-end run.
    let results = out.join("results.csv");
    let csv = std::fs::read_to_string(&results).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    let col = |run: &str, name: &str| cell(&results, run, name);
    assert_eq!(col("a-e2e", "head_accuracy"), "0.915000");
    assert_eq!(col("a-e2e", "speedup"), "1.0000");
    assert_eq!(col("c-gn", "speedup"), "4.0000");
    assert_eq!(col("c-gn", "seconds_per_step"), "0.100000");
    assert_eq!(col("c-gn", "method"), "GN-DGL G=2 K=2");
    assert_eq!(col("b-dgl", "finished"), "false");
    assert_eq!(col("b-dgl", "epochs_done"), "1");
    assert_eq!(col("b-dgl", "head_accuracy"), "0.750000");
    // Per node, measured: summed over both epochs, then per step.
    assert_eq!(col("c-gn", "slowest_node_seconds_per_step"), "0.080000");
    assert_eq!(col("c-gn", "cpu_seconds_per_step"), "0.130000");
    assert_eq!(col("a-e2e", "slowest_node_seconds_per_step"), "0.390000");
    assert_eq!(col("a-e2e", "cpu_seconds_per_step"), "-");
    assert_eq!(col("b-dgl", "slowest_node_seconds_per_step"), "-");
    assert_eq!(col("b-dgl", "cpu_seconds_per_step"), "-");
    // Costs come from the plan, not from the (dummy) summary.
    for (run, plan, g) in [("a-e2e", "1", 1), ("b-dgl", "2", 1), ("c-gn", "2", 2)] {
        assert_eq!(
            col(run, "max_node_macs"),
            max_node_macs(plan, g).to_string(),
            "{run}"
        );
    }
    let e2e: f64 = col("a-e2e", "max_node_macs").parse().unwrap();
    let gn: f64 = col("c-gn", "max_node_macs").parse().unwrap();
    let ratio: f64 = col("c-gn", "max_node_macs_ratio").parse().unwrap();
    assert!((ratio - e2e / gn).abs() < 1e-3, "{ratio} vs {}", e2e / gn);

    // Markdown: the same rows, readable; no seed table, as no configuration ran twice.
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(!md.contains("Across seeds") && !out.join("seeds.csv").exists());
    assert!(
        md.contains("| c-gn | GN-DGL G=2 K=2 | 2 | 80.00 | 79.00 |"),
        "{md}"
    );
    assert!(md.contains("| b-dgl | DGL K=2 | 1/2 | 75.00 |"), "{md}");
    assert!(
        md.contains("| 0.100 | 1.0 | 0.080 | 0.130 | 4.00x |"),
        "{md}"
    );
    assert!(md.contains("| 0.400 | 4.0 | 0.390 | - | 1.00x |"), "{md}");
    for stem in [
        "accuracy_vs_max_node_macs",
        "accuracy_vs_step_time",
        "curves",
        "units",
    ] {
        assert!(md.contains(&format!("({stem}.svg)")), "{stem} not linked");
        let svg = std::fs::read_to_string(out.join(format!("{stem}.svg"))).unwrap();
        assert!(svg.starts_with("<svg"), "{stem}.svg");
        let png = std::fs::read(out.join(format!("{stem}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{stem}.png");
        let (w, h) = (
            u32::from_be_bytes(png[16..20].try_into().unwrap()),
            u32::from_be_bytes(png[20..24].try_into().unwrap()),
        );
        assert_eq!((w, h), (960, 640), "{stem}.png size");
    }
    // The paper's figure: a bubble and a centre dot per run, labelled with its method, and a legend
    // entry per family.
    let fig = std::fs::read_to_string(out.join("accuracy_vs_max_node_macs.svg")).unwrap();
    assert!(fig.matches("<circle").count() >= 2 * 3 + 3, "{fig}");
    for text in [
        "e2e",
        "DGL K=2",
        "GN-DGL G=2 K=2",
        "end-to-end",
        "DGL (G=1)",
        "G=2",
    ] {
        assert!(has_text(&fig, text), "missing text {text}");
    }
    // Curves and units name the runs in their legends; units draw only runs with boundaries.
    let curves = std::fs::read_to_string(out.join("curves.svg")).unwrap();
    assert!(has_text(&curves, "a-e2e") && has_text(&curves, "c-gn"));
    let units = std::fs::read_to_string(out.join("units.svg")).unwrap();
    assert!(has_text(&units, "c-gn") && !has_text(&units, "a-e2e"));

    // --baseline changes the reference of the speed-up.
    let (ok, _, stderr) = output(
        groupwise()
            .arg("report")
            .arg(runs.join("c-gn"))
            .arg(runs.join("a-e2e"))
            .args(["--baseline", "c-gn", "--out"])
            .arg(root.join("r2")),
    );
    assert!(ok, "{stderr}");
    assert_eq!(
        cell(&root.join("r2/results.csv"), "a-e2e", "speedup"),
        "0.2500"
    );

    // Not a run directory: a clear error, nothing written.
    let empty = root.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (ok, _, stderr) = output(
        groupwise()
            .arg("report")
            .arg(&empty)
            .arg("--out")
            .arg(root.join("r3")),
    );
    assert!(!ok && stderr.contains("no config.json"), "{stderr}");
    assert!(!root.join("r3").exists());
}

/// A run's config gets another seed (weights and data order), as `--grid seed=...` gives.
fn set_seed(run: &Path, seed: u64) {
    edit_config(run, |c| {
        c["seed"] = json!(seed);
        c["data"]["seed"] = json!(seed);
    });
}

#[test]
fn runs_differing_only_in_seed_are_reported_as_one_configuration() {
    let root = scratch("report-seeds");
    let root = root.path();
    let runs = root.join("runs");
    // e2e over seeds 0, 1, 2: 90, 92, 94 % at 0.4 s/step; GN-DGL over seeds 0, 1 (finished: 80 and
    // 84 % at 0.1 and 0.2 s/step) and 2 (unfinished, not counted).
    for (seed, acc) in [(0, 0.90), (1, 0.92), (2, 0.94)] {
        let name = format!("x-e2e_seed={seed}");
        make_run(&runs, &name, "1", 1, 10, 4.0, &[0.5, acc], json!([]), true);
        set_seed(&runs.join(&name), seed);
    }
    for (seed, acc, secs, finished) in [
        (0, 0.80, 1.0, true),
        (1, 0.84, 2.0, true),
        (2, 0.50, 1.0, false),
    ] {
        let name = format!("y-gn_seed={seed}");
        let acc: &[f64] = if finished { &[0.6, acc] } else { &[acc] };
        let units = json!([[0.4, 0.5], [0.6, 0.65]]);
        make_run(&runs, &name, "2", 2, 10, secs, acc, units, finished);
        set_seed(&runs.join(&name), seed);
    }
    let out = root.join("report");
    let (ok, _, stderr) = output(groupwise().arg("report").arg(&runs).arg("--out").arg(&out));
    assert!(ok, "{stderr}");

    // seeds.csv: mean, sample standard deviation and range of the counted runs.
    let seeds = out.join("seeds.csv");
    let csv = std::fs::read_to_string(&seeds).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    let col = |config: &str, name: &str| cell(&seeds, config, name);
    for (config, name, want) in [
        ("x-e2e", "runs", "3"),
        ("x-e2e", "counted", "3"),
        ("x-e2e", "seeds", "0 1 2"),
        ("x-e2e", "head_mean", "0.920000"),
        ("x-e2e", "head_std", "0.020000"),
        ("x-e2e", "head_min", "0.900000"),
        ("x-e2e", "head_max", "0.940000"),
        ("x-e2e", "speedup", "1.0000"),
        ("y-gn", "method", "GN-DGL G=2 K=2"),
        ("y-gn", "runs", "3"),
        ("y-gn", "counted", "2"),
        ("y-gn", "head_mean", "0.820000"),
        ("y-gn", "head_std", "0.028284"),
        ("y-gn", "ensemble_mean", "0.810000"),
        ("y-gn", "seconds_per_step_mean", "0.150000"),
        ("y-gn", "speedup", "2.6667"),
    ] {
        assert_eq!(col(config, name), want, "{config} {name}: {csv}");
    }
    assert_eq!(
        col("y-gn", "max_node_macs"),
        max_node_macs("2", 2).to_string()
    );
    // The Markdown table, beside the per-run one.
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("## Across seeds"), "{md}");
    assert!(
        md.contains("| x-e2e | e2e | 0, 1, 2 | 3/3 | 92.00 ± 2.00 | 90.00-94.00 | 91.00 ± 2.00 |"),
        "{md}"
    );
    assert!(
        md.contains("| y-gn | GN-DGL G=2 K=2 | 0, 1, 2 | 2/3 | 82.00 ± 2.83 | 80.00-84.00 |"),
        "{md}"
    );
    assert!(
        md.contains("| y-gn_seed=2 | GN-DGL G=2 K=2 | 1/2 | 50.00 |"),
        "{md}"
    );
    // The scatter shows one point per configuration, labelled with how many runs it holds; curves
    // and units name each configuration once.
    let fig = std::fs::read_to_string(out.join("accuracy_vs_max_node_macs.svg")).unwrap();
    assert!(has_text(&fig, "e2e (n=3)") && has_text(&fig, "GN-DGL G=2 K=2 (n=2)"));
    assert!(!fig.contains("seed="), "{fig}");
    for stem in ["curves", "units"] {
        let svg = std::fs::read_to_string(out.join(format!("{stem}.svg"))).unwrap();
        let named =
            svg.lines().filter(|l| l.trim() == "y-gn").count() + svg.matches(">y-gn<").count();
        assert_eq!(named, 1, "{stem}: {svg}");
        assert!(!svg.contains("seed="), "{stem}");
    }

    // One seed per configuration again (same --out): no seed table, and the old one is gone.
    let (ok, _, stderr) = output(
        groupwise()
            .arg("report")
            .arg(runs.join("x-e2e_seed=0"))
            .arg(runs.join("y-gn_seed=0"))
            .arg("--out")
            .arg(&out),
    );
    assert!(ok, "{stderr}");
    assert!(!out.join("seeds.csv").exists());
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(!md.contains("Across seeds"), "{md}");
}

/// Regression: `results.csv` and `seeds.csv` were written by hand, unquoted, so an explicit plan
/// (`1:2,2:1,3:0,3:4`) or a run name with commas (a sweep's grid value) shifted every column after
/// it. Written with the csv crate, every row has the header's columns and such cells read back
/// whole.
#[test]
fn csv_cells_with_commas_keep_their_columns() {
    let root = scratch("report-commas");
    let runs = root.path().join("runs");
    let plan = "1:2,2:1,3:0,3:4";
    make_run(&runs, "e2e", "1", 1, 10, 4.0, &[0.5, 0.9], json!([]), true);
    let named = ["plan=1-2,2-1,3-0,3-4_seed=0", "plan=1-2,2-1,3-0,3-4_seed=1"];
    for (seed, name) in named.iter().enumerate() {
        make_run(&runs, name, plan, 1, 10, 1.0, &[0.5, 0.8], json!([]), true);
        edit_config(&runs.join(name), |c| {
            c["blocks_per_stage"] = json!(5); // ResNet-32, where the plan's boundaries exist
            c["seed"] = json!(seed);
            c["data"]["seed"] = json!(seed);
        });
    }
    let dirs: Vec<_> = ["e2e", named[0], named[1]]
        .iter()
        .map(|n| runs.join(n))
        .collect();
    let out = root.path().join("report");
    report::write(&dirs, &out, &report::Options::default()).unwrap();

    // read_csv checks every row against the header's length.
    let (header, rows) = read_csv(&out.join("results.csv"));
    assert_eq!(header.len(), 20);
    assert_eq!(rows.len(), 3);
    let plan_col = header.iter().position(|h| h == "plan").unwrap();
    for (row, name) in rows[1..].iter().zip(named) {
        assert_eq!((row[0].as_str(), row[plan_col].as_str()), (name, plan));
        assert_eq!(row[header.len() - 1], "threads");
    }
    let (header, rows) = read_csv(&out.join("seeds.csv"));
    assert_eq!(header.len(), 15);
    let configs: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(configs, ["e2e", "plan=1-2,2-1,3-0,3-4"]);
    assert_eq!(cell(&out.join("seeds.csv"), configs[1], "runs"), "2");
}

/// A run killed while appending its metrics line leaves that last line cut short: the report over
/// many runs used to fail whole on it. Now it is skipped with a warning naming the file and line;
/// a line that does not parse anywhere else is still an error naming them.
#[test]
fn report_skips_a_cut_short_last_metrics_line_and_refuses_a_corrupt_one() {
    let root = scratch("report-cut");
    let runs = root.path().join("runs");
    make_run(
        &runs,
        "a-e2e",
        "1",
        1,
        10,
        4.0,
        &[0.8, 0.9],
        json!([]),
        true,
    );
    make_run(
        &runs,
        "b-dgl",
        "2",
        1,
        10,
        2.0,
        &[0.7],
        json!([[0.5], [0.7]]),
        false,
    );
    let metrics = runs.join("b-dgl").join("metrics.jsonl");
    let line = std::fs::read_to_string(&metrics).unwrap();
    std::fs::write(&metrics, format!("{line}{}", &line[..line.len() / 3])).unwrap();
    let out = root.path().join("report");
    let report = || {
        groupwise()
            .arg("report")
            .arg(&runs)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap()
    };
    let o = report();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let want = format!("warning: {}: line 2 is cut short", metrics.display());
    assert!(stderr.contains(&want), "`{stderr}` lacks `{want}`");
    // The run's one complete epoch is reported.
    assert_eq!(cell(&out.join("results.csv"), "b-dgl", "epochs_done"), "1");

    std::fs::write(&metrics, format!("{}\n{line}", &line[..line.len() / 3])).unwrap();
    let o = report();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    let want = format!(
        "{}: not a groupwise metrics line: line 1: ",
        metrics.display()
    );
    assert!(stderr.contains(&want), "`{stderr}` lacks `{want}`");
}

/// Every preset resolves to a valid plan, and the paper's ResNet-32 grid lands on METHOD.md section
/// 8's per-node MACs (so each preset names the plan and G it claims). In-process: the presets and
/// the plan `groupwise plan` builds, with one `groupwise presets` and one `groupwise plan` to check
/// the command prints the same.
#[test]
fn every_preset_plans_and_the_paper_grid_matches_the_published_costs() {
    let names: Vec<&str> = presets::names().collect();
    assert!(names.len() >= 84, "{names:?}");
    let table: &[(&str, f64)] = &[
        ("e2e", 7.01e7),
        ("dgl-k2", 3.70e7),
        ("dgl-k4", 1.94e7),
        ("dgl-k8", 1.09e7),
        ("dgl-k16", 6.04e6),
        ("g2-k1", 1.91e7),
        ("g2-k2", 1.11e7),
        ("g2-k4", 6.57e6),
        ("g2-k8", 4.27e6),
        ("g2-k16", 3.04e6),
        ("g4-k1", 5.84e6),
        ("g4-k2", 4.01e6),
        ("g4-k4", 2.85e6),
        ("g4-k8", 2.30e6),
        ("g8-k1", 2.45e6),
        ("g8-k2", 2.07e6),
        ("g8-k4", 1.78e6),
    ];
    let max_node_macs = |name: &str| -> u64 {
        let config = presets::preset(name).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let plan = config
            .declared_plan()
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        plan.figure_max_node_macs()
    };
    let mut checked = 0;
    for name in &names {
        let macs = max_node_macs(name) as f64;
        if let Some((_, want)) = table
            .iter()
            .find(|(n, _)| format!("paper/resnet32-{n}") == *name)
        {
            let rel = (macs - want).abs() / want;
            assert!(rel < 0.005, "{name}: {macs:.4e} vs the paper's {want:.2e}");
            checked += 1;
        }
    }
    assert_eq!(checked, table.len());

    // The command lists the same presets and prints the same costs.
    let (ok, stdout, stderr) = output(groupwise().arg("presets"));
    assert!(ok, "{stderr}");
    let listed: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(listed, names);
    let name = "paper/resnet32-g2-k4";
    let (ok, stdout, stderr) = output(groupwise().args(["plan", "--json", "--preset", name]));
    assert!(ok, "groupwise plan --preset {name}: {stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["max_node_macs"].as_u64(), Some(max_node_macs(name)));
}
