//! Golden tests against an independent PyTorch implementation (`scripts/golden/make_golden.py`).
//!
//! The fixtures hold a small ResNet-32-structured network (widths 8,8,16,32) written the reference way
//! (one process, real `groups=G` convolutions, every loss summed and back-propagated once, one
//! `torch.optim.SGD(nesterov=True)`): its initial tensors in our checkpoint naming, one batch, every
//! parameter and BN statistic after two SGD steps at lr 0.1, and every loss of both steps. The Rust
//! network (one narrow column and one optimizer per unit) must reproduce them to 1e-5 relative.
//!
//! The reference values are float64. A float32 run of this deep BN+ReLU network is not reproducible
//! to 1e-5 in its parameters by *any* implementation (rounding flips ReLU masks; PyTorch's own float32
//! run lands up to several hundred percent away, per entry, from its float64 run after two steps, see
//! `pytorch_float32_worst_rel_err` in the fixtures), so the parameter comparison runs our network in
//! float64; the float32 run (the production path) is compared on its losses and logits.
//! Also: the diversity term alone (value and gradient), the cosine+warm-up schedule, and the isolation
//! of one unit's step from every other node.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use groupwise::checkpoint;
use groupwise::local::{loss, LossConfig, Network, SgdConfig};
use groupwise::model::Arch;
use groupwise::plan::{AuxInput, Plan};
use groupwise::schedule::Schedule;
use serde_json::Value;
use tch::{Device, Kind, Tensor};

/// Relative tolerance of every comparison against PyTorch.
const RTOL: f64 = 1e-5;
/// A tensor entry's error is taken relative to `max(|expected|, FLOOR * max|expected over the tensor|)`
/// so that entries near zero (a BN bias, a momentum-cancelled update) do not fail spuriously.
const FLOOR: f64 = 1e-3;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden")
}

fn read_json(name: &str) -> Value {
    let path = fixtures().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn read_tensors(name: &str) -> BTreeMap<String, Tensor> {
    let path = fixtures().join(name);
    Tensor::read_safetensors(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .into_iter()
        .collect()
}

/// The worst relative error seen so far, and where.
#[derive(Default)]
struct Worst {
    rel: f64,
    name: String,
}

impl Worst {
    fn see(&mut self, rel: f64, name: &str) {
        if rel > self.rel || self.name.is_empty() {
            self.rel = rel;
            self.name = name.to_string();
        }
    }
}

/// Worst relative error of `got` against `want`, with the floor described at [`FLOOR`].
fn tensor_rel_err(got: &Tensor, want: &Tensor) -> f64 {
    tensor_rel_err_floor(got, want, FLOOR)
}

/// Worst relative error of `got` against `want`, entries taken relative to `max(|want|, floor *
/// max|want|)`.
fn tensor_rel_err_floor(got: &Tensor, want: &Tensor, floor: f64) -> f64 {
    assert_eq!(got.size(), want.size(), "shape mismatch");
    let got = got.to_kind(Kind::Double);
    let want = want.to_kind(Kind::Double);
    let scale = want.abs().max().double_value(&[]);
    let floor = (floor * scale).max(1e-30);
    let denom = want.abs().clamp_min(floor);
    ((&got - &want).abs() / denom).max().double_value(&[])
}

fn check_tensor(
    name: &str,
    got: &Tensor,
    want: &Tensor,
    worst: &mut Worst,
    failures: &mut Vec<String>,
) {
    if got.size() != want.size() {
        failures.push(format!(
            "{name}: shape {:?}, expected {:?}",
            got.size(),
            want.size()
        ));
        return;
    }
    let rel = tensor_rel_err(got, want);
    worst.see(rel, name);
    if rel.is_nan() || rel > RTOL {
        failures.push(format!("{name}: relative error {rel:.3e}"));
    }
}

fn check_scalar(name: &str, got: f64, want: f64, worst: &mut Worst, failures: &mut Vec<String>) {
    let rel = (got - want).abs() / want.abs().max(1e-6);
    worst.see(rel, name);
    if rel.is_nan() || rel > RTOL {
        failures.push(format!(
            "{name}: {got} vs {want} (relative error {rel:.3e})"
        ));
    }
}

fn small_arch() -> Arch {
    Arch {
        blocks_per_stage: 5,
        widths: [8, 8, 16, 32],
        in_channels: 3,
        image_size: 32,
        classes: 10,
    }
}

fn arch_of(meta: &Value) -> Arch {
    let w: Vec<i64> = meta["widths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    Arch {
        blocks_per_stage: meta["blocks_per_stage"].as_u64().unwrap() as usize,
        widths: [w[0], w[1], w[2], w[3]],
        in_channels: meta["in_channels"].as_i64().unwrap(),
        image_size: meta["image_size"].as_i64().unwrap(),
        classes: meta["classes"].as_i64().unwrap(),
    }
}

/// Tensors of `all` whose name starts with `prefix`, with the prefix removed.
fn with_prefix(all: &BTreeMap<String, Tensor>, prefix: &str) -> BTreeMap<String, Tensor> {
    all.iter()
        .filter_map(|(n, t)| {
            n.strip_prefix(prefix)
                .map(|r| (r.to_string(), t.shallow_clone()))
        })
        .collect()
}

/// Builds the network of a fixture and loads its `init.*` tensors through a real checkpoint file.
fn build_network(case: &str, meta: &Value, fixture: &BTreeMap<String, Tensor>) -> Network {
    let groups = meta["groups"].as_i64().unwrap();
    let plan = Plan::new(
        arch_of(meta),
        meta["plan"].as_str().unwrap(),
        groups,
        AuxInput::StopGradient,
    )
    .expect("valid plan");
    let boundaries: Vec<(usize, usize)> = meta["boundaries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b[0].as_u64().unwrap() as usize,
                b[1].as_u64().unwrap() as usize,
            )
        })
        .collect();
    assert_eq!(plan.boundary_names(), boundaries, "{case}: plan boundaries");
    let mut net = Network::new(
        &plan,
        LossConfig::default(),
        SgdConfig::default(),
        Device::Cpu,
    );
    let init = with_prefix(fixture, "init.");
    let ours: BTreeSet<String> = net.named_tensors().into_keys().collect();
    let theirs: BTreeSet<String> = init.keys().cloned().collect();
    assert_eq!(
        ours.difference(&theirs).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "{case}: tensors of the Rust network missing from the fixture"
    );
    assert_eq!(
        theirs.difference(&ours).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "{case}: fixture tensors the Rust network does not have"
    );
    // Tests run in parallel threads of one process: every load gets its own file.
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "groupwise-golden-{case}-{}-{}.safetensors",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let named: Vec<(String, Tensor)> = init.into_iter().collect();
    checkpoint::write_atomic(&named, &path).expect("write init checkpoint");
    checkpoint::load(&mut net, &path, false).expect("load init checkpoint");
    let _ = std::fs::remove_file(&path);
    net
}

/// Train-mode logits of every auxiliary classifier, computed as `train_step` does (on a network that is
/// thrown away afterwards, since train-mode forwards move the BN statistics).
fn aux_logits_train(net: &Network, images: &Tensor) -> Vec<Vec<Tensor>> {
    tch::no_grad(|| {
        let mut input = images.shallow_clone();
        let mut out = Vec::new();
        for units in &net.units {
            let slices: Vec<Tensor> = units
                .iter()
                .map(|u| u.forward_trunk(&input, true))
                .collect();
            out.push(
                units
                    .iter()
                    .zip(&slices)
                    .map(|(u, o)| u.forward_aux(&u.aux_input(o, &slices), true))
                    .collect(),
            );
            input = if slices.len() == 1 {
                slices[0].shallow_clone()
            } else {
                Tensor::cat(&slices, 1)
            };
        }
        out
    })
}

/// Runs one fixture's two steps with the network in `kind` (Double: every tensor is compared; Float:
/// losses and logits are, the tensors' worst error is only printed).
fn run_case(case: &str, kind: Kind) {
    let meta = read_json(&format!("{case}.json"));
    let fixture = read_tensors(&format!("{case}.safetensors"));
    let images = fixture["input.images"].to_kind(kind);
    let labels = fixture["input.labels"].shallow_clone();
    assert_eq!(labels.kind(), Kind::Int64);
    let lr = meta["lr"].as_f64().unwrap();
    let lambda = meta["lambda"].as_f64().unwrap();
    assert_eq!(LossConfig::default().diversity_weight, lambda);
    assert_eq!(
        LossConfig::default().temperature,
        meta["temperature"].as_f64().unwrap()
    );
    let double = kind == Kind::Double;
    let build = || {
        let mut net = build_network(case, &meta, &fixture);
        if double {
            for p in net.params_mut() {
                p.vs.double();
            }
        }
        net
    };
    let label = if double { "float64" } else { "float32" };
    // Logits: against the float64 reference, or PyTorch's float32 run for a float32 run (entries near
    // zero carry float32 forward rounding of ~1e-7 of the largest logit, too much for RTOL at FLOOR).
    let logits_prefix = if double { "logits1" } else { "logits1_float32" };

    let mut worst = Worst::default();
    let mut failures = Vec::new();

    // Step-1 logits of the auxiliary classifiers (the head's are not exposed in train mode; its loss is
    // compared below instead).
    {
        let probe = build();
        let logits = aux_logits_train(&probe, &images);
        for (k, row) in logits.iter().enumerate() {
            for (g, z) in row.iter().enumerate() {
                let name = format!("{logits_prefix}.m{k}.g{g}");
                check_tensor(&name, z, &fixture[&name], &mut worst, &mut failures);
            }
        }
    }

    let mut net = build();
    let steps = meta[if double { "steps" } else { "steps_float32" }]
        .as_array()
        .unwrap();
    let mut tensor_worst = Worst::default();
    for (i, want) in steps.iter().enumerate() {
        let step = i + 1;
        let stats = net.train_step(&images, &labels, lr);
        let k_count = net.plan.boundary_count();
        assert_eq!(stats.units.len(), k_count);
        for k in 0..k_count {
            let ce = want["unit_ce"][k].as_array().unwrap();
            assert_eq!(stats.units[k].len(), ce.len());
            for (g, ce) in ce.iter().enumerate() {
                check_scalar(
                    &format!("step{step} CE m{k}.g{g}"),
                    stats.units[k][g].cross_entropy,
                    ce.as_f64().unwrap(),
                    &mut worst,
                    &mut failures,
                );
                check_scalar(
                    &format!("step{step} L_div m{k}.g{g}"),
                    stats.units[k][g].diversity,
                    want["diversity"][k].as_f64().unwrap(),
                    &mut worst,
                    &mut failures,
                );
            }
            check_scalar(
                &format!("step{step} L_{k}"),
                stats.module_loss(k, lambda),
                want["module_loss"][k].as_f64().unwrap(),
                &mut worst,
                &mut failures,
            );
        }
        check_scalar(
            &format!("step{step} head CE"),
            stats.head_loss,
            want["head_ce"].as_f64().unwrap(),
            &mut worst,
            &mut failures,
        );
        let expected = with_prefix(&fixture, &format!("step{step}."));
        let got: BTreeMap<String, Tensor> = net
            .named_tensors()
            .into_iter()
            .filter(|(n, _)| !n.starts_with("momentum."))
            .collect();
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "{case}: tensor names after step {step}"
        );
        for (name, t) in &got {
            let full = format!("step{step}.{name}");
            if double {
                check_tensor(&full, t, &expected[name], &mut worst, &mut failures);
            } else {
                tensor_worst.see(tensor_rel_err(t, &expected[name]), &full);
            }
        }
    }
    println!(
        "{case} ({label}): {} tensors x {} steps; worst relative error {:.3e} at {}",
        net.named_tensors().len(),
        steps.len(),
        worst.rel,
        worst.name
    );
    if !double {
        println!(
            "{case} ({label}): tensors not compared; worst relative error against float64 {:.3e} at {} \
             (PyTorch float32: {})",
            tensor_worst.rel, tensor_worst.name, meta["pytorch_float32_worst_rel_err"]
        );
    }
    assert!(
        failures.is_empty(),
        "{case} ({label}): {} mismatches against PyTorch:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// K=4 (1,2),(2,1),(3,0),(3,4), G=2, stop-gradient auxiliary input: the main GN-DGL setting.
#[test]
fn golden_k4_g2_matches_pytorch_grouped_convolutions() {
    run_case("k4g2", Kind::Double);
}

/// The same in float32: losses and logits.
#[test]
fn golden_k4_g2_float32_losses() {
    run_case("k4g2", Kind::Float);
}

/// K=1, G=1: plain end-to-end training of the whole network through the head.
#[test]
fn golden_k1_g1_matches_pytorch_end_to_end() {
    run_case("k1g1", Kind::Double);
}

/// The same in float32: losses.
#[test]
fn golden_k1_g1_float32_losses() {
    run_case("k1g1", Kind::Float);
}

/// K=2, G=1: DGL, boundaries (2,1),(3,4), no diversity term.
#[test]
fn golden_k2_g1_matches_pytorch_dgl() {
    run_case("k2g1", Kind::Double);
}

/// The same in float32: losses and logits.
#[test]
fn golden_k2_g1_float32_losses() {
    run_case("k2g1", Kind::Float);
}

fn f64_rows(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn f32_rows(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Floor of the `L_div` gradient comparison: a float32 computation (ours or PyTorch's own, see
/// `pytorch_float32_grad_worst_rel_err` in the fixture: 1.9e-5 at a floor of 1e-3, 6e-6 at 1e-2) cannot
/// be held to RTOL at [`FLOOR`] on entries that are small because of cancellation.
const DIV_FLOOR: f64 = 1e-2;

/// Compares a gradient of `L_div` with the reference. Its true-class entries are zero in exact
/// arithmetic (the renormalised row does not depend on z_y, up to the 1e-8 guard): the float64
/// reference has ~1e-18 there and float32 ~1e-10, which no relative measure can compare, so they
/// are checked to be zero relative to the gradient's scale instead.
fn check_div_grad(
    name: &str,
    got: &Tensor,
    want: &Tensor,
    true_class: &Tensor,
    worst: &mut Worst,
    failures: &mut Vec<String>,
) {
    let scale = want.abs().max().double_value(&[]);
    let got = got.to_kind(Kind::Double);
    let at_label = (&got * true_class).abs().max().double_value(&[]) / scale;
    if at_label.is_nan() || at_label > 1e-6 {
        failures.push(format!(
            "{name}: true-class entries {at_label:.3e} of the gradient scale"
        ));
    }
    let others = 1.0 - true_class;
    let rel = tensor_rel_err_floor(&(&got * &others), &(want * &others), DIV_FLOOR);
    worst.see(rel, name);
    if rel.is_nan() || rel > RTOL {
        failures.push(format!("{name}: relative error {rel:.3e}"));
    }
}

/// `L_div` alone against the explicit double sum of the PyTorch script (float64): value and gradient
/// with every group's logits live, and each worker's view (own logits live, the others detached)
/// giving the same gradient for its own logits (METHOD.md section 4).
#[test]
fn golden_diversity_value_and_gradient() {
    let meta = read_json("diversity.json");
    let (g_count, batch, classes) = (
        meta["groups"].as_i64().unwrap(),
        meta["batch"].as_i64().unwrap(),
        meta["classes"].as_i64().unwrap(),
    );
    let temperature = meta["temperature"].as_f64().unwrap();
    let labels: Vec<i64> = meta["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let labels = Tensor::from_slice(&labels);
    let true_class = labels.one_hot(classes).to_kind(Kind::Double);
    let logits: Vec<Tensor> = (0..g_count as usize)
        .map(|g| Tensor::from_slice(&f32_rows(&meta["logits"][g])).reshape([batch, classes]))
        .collect();
    let grads: Vec<Tensor> = (0..g_count as usize)
        .map(|g| Tensor::from_slice(&f64_rows(&meta["grad"][g])).reshape([batch, classes]))
        .collect();
    let want = meta["value"].as_f64().unwrap();
    let mut worst = Worst::default();
    let mut failures = Vec::new();

    let live: Vec<Tensor> = logits
        .iter()
        .map(|z| z.copy().set_requires_grad(true))
        .collect();
    let value = loss::diversity(&live, &labels, temperature);
    check_scalar(
        "L_div",
        value.double_value(&[]),
        want,
        &mut worst,
        &mut failures,
    );
    value.backward();
    for (g, z) in live.iter().enumerate() {
        let name = format!("dL_div/dz_{g}");
        check_div_grad(
            &name,
            &z.grad(),
            &grads[g],
            &true_class,
            &mut worst,
            &mut failures,
        );
    }

    for g in 0..g_count as usize {
        let own = logits[g].copy().set_requires_grad(true);
        let view: Vec<Tensor> = (0..g_count as usize)
            .map(|h| {
                if h == g {
                    own.shallow_clone()
                } else {
                    logits[h].detach()
                }
            })
            .collect();
        let value = loss::diversity(&view, &labels, temperature);
        check_scalar(
            &format!("L_div (worker {g})"),
            value.double_value(&[]),
            want,
            &mut worst,
            &mut failures,
        );
        value.backward();
        let name = format!("dL_div/dz_{g} (worker {g})");
        check_div_grad(
            &name,
            &own.grad(),
            &grads[g],
            &true_class,
            &mut worst,
            &mut failures,
        );
    }
    // G = 1: no diversity term.
    let single = loss::diversity(&logits[..1], &labels, temperature);
    assert_eq!(single.double_value(&[]), 0.0);
    println!(
        "diversity: worst relative error {:.3e} at {}",
        worst.rel, worst.name
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// METHOD.md section 5: lr0 0.8, E = 160, 10 warm-up epochs, every epoch against Python's values.
#[test]
fn golden_cosine_schedule() {
    let meta = read_json("schedule.json");
    let lr0 = meta["lr0"].as_f64().unwrap();
    let epochs = meta["epochs"].as_u64().unwrap() as usize;
    let schedule = Schedule::Cosine {
        warmup_epochs: meta["warmup_epochs"].as_u64().unwrap() as usize,
    };
    let want = meta["lr"].as_array().unwrap();
    assert_eq!(want.len(), epochs);
    let mut worst = 0.0f64;
    for (i, w) in want.iter().enumerate() {
        let e = i + 1;
        let w = w.as_f64().unwrap();
        let got = schedule.lr(lr0, e, epochs);
        let rel = (got - w).abs() / w.abs().max(1e-12);
        worst = worst.max(rel);
        assert!(rel <= 1e-12, "epoch {e}: lr {got} vs {w}");
    }
    println!("schedule: worst relative error {worst:.3e}");
}

/// Unit (1, 0) of the K=4, G=2 stop-gradient plan steps alone: no tensor of any other node moves, and
/// its loss leaves no gradient on unit (1, 1) (whose live logits it is handed) nor on anything else.
#[test]
fn unit_step_is_isolated() {
    tch::manual_seed(11);
    let plan = Plan::new(small_arch(), "4", 2, AuxInput::StopGradient).unwrap();
    let mut net = Network::new(
        &plan,
        LossConfig::default(),
        SgdConfig::default(),
        Device::Cpu,
    );
    // Module 1's input: boundary (1,2)'s output, w1 = 8 channels at 32x32.
    let input = Tensor::randn([4, 8, 32, 32], (Kind::Float, Device::Cpu));
    let labels = Tensor::from_slice(&[3i64, 1, 4, 1]);

    let own: Vec<Tensor> = net.units[1]
        .iter()
        .map(|u| u.forward_trunk(&input, true))
        .collect();
    let slices: Vec<Tensor> = own.iter().map(Tensor::detach).collect();
    let aux_in = net.units[1][0].aux_input(&own[0], &slices);
    let logits: Vec<Tensor> = net.units[1]
        .iter()
        .zip(&own)
        .map(|(u, o)| u.forward_aux(&u.aux_input(o, &slices), true))
        .collect();
    assert!(logits[1].requires_grad(), "peer logits are live");

    // Snapshot after the forwards (train-mode forwards move the BN statistics of both groups).
    let before: BTreeMap<String, Tensor> = net
        .named_tensors()
        .into_iter()
        .map(|(n, t)| (n, t.copy()))
        .collect();
    let images = Tensor::zeros([4, 3, 32, 32], (Kind::Float, Device::Cpu));
    let stats = net.units[1][0].step(&aux_in, &logits[0], &logits, &labels, &images, 0.1);
    assert!(stats.cross_entropy.is_finite() && stats.diversity > 0.0);

    let after = net.named_tensors();
    let mine = |n: &str| n.starts_with("m1.g0.") || n.starts_with("momentum.m1.g0.");
    let mut moved = 0;
    for (name, t) in &after {
        match before.get(name) {
            Some(b) if mine(name) => {
                if !t.equal(b) {
                    moved += 1;
                }
            }
            Some(b) => assert!(t.equal(b), "{name} changed when unit (1,0) stepped"),
            None => assert!(mine(name), "{name} appeared when unit (1,0) stepped"),
        }
    }
    let trainable = net.units[1][0].params.vs.trainable_variables().len();
    assert!(
        moved >= trainable,
        "only {moved} of unit (1,0)'s {trainable} parameters moved"
    );

    // No gradient reached any other node; unit (1,1)'s parameters in particular sit in the graph of the
    // logits that were handed to the step.
    for p in net.params() {
        if p.prefix == "m1.g0." {
            continue;
        }
        for (name, v) in p.vs.variables() {
            let grad = v.grad();
            assert!(
                !grad.defined() || grad.abs().max().double_value(&[]) == 0.0,
                "{}{name} received a gradient from unit (1,0)'s loss",
                p.prefix
            );
        }
    }
    let defined = net.units[1][1]
        .params
        .vs
        .trainable_variables()
        .iter()
        .filter(|v| v.grad().defined())
        .count();
    println!("isolation: {moved} tensors of unit (1,0) moved; unit (1,1) has {defined} defined gradients");
}

/// METHOD.md section 1's initialisation, measured on a freshly built network (the golden cases load
/// PyTorch's initial tensors, so they do not see it): BN gamma 1 and beta 0 with running statistics 0
/// and 1; conv weights ~ N(0, sqrt(2 / (k*k*C_out))) with C_out the whole layer's width; Linear weight
/// and bias within +-1/sqrt(fan_in).
#[test]
fn fresh_network_init_follows_method() {
    tch::manual_seed(5);
    let arch = Arch::resnet32(3, 32, 10);
    let plan = Plan::new(arch, "4", 2, AuxInput::StopGradient).unwrap();
    let net = Network::new(
        &plan,
        LossConfig::default(),
        SgdConfig::default(),
        Device::Cpu,
    );
    let mut failures = Vec::new();
    // Pool every conv weight of one kind of layer over all units to estimate its std.
    let mut pooled: BTreeMap<String, Vec<Tensor>> = BTreeMap::new();
    for (name, t) in net.named_tensors() {
        let value = |f: &dyn Fn(&Tensor) -> Tensor| f(&t).double_value(&[]);
        if name.ends_with("bn.weight")
            || name.contains(".bn1.weight")
            || name.contains(".bn2.weight")
        {
            if value(&|t| (t - 1.0).abs().max()) != 0.0 {
                failures.push(format!(
                    "{name}: BN gamma not 1 (mean {})",
                    value(&|t| t.mean(Kind::Float))
                ));
            }
        } else if name.ends_with(".bias") && !name.contains(".fc") {
            if value(&|t| t.abs().max()) != 0.0 {
                failures.push(format!("{name}: BN beta not 0"));
            }
        } else if name.ends_with("running_mean") {
            if value(&|t| t.abs().max()) != 0.0 {
                failures.push(format!("{name}: running mean not 0"));
            }
        } else if name.ends_with("running_var") {
            if value(&|t| (t - 1.0).abs().max()) != 0.0 {
                failures.push(format!("{name}: running var not 1"));
            }
        } else if name.contains(".fc") {
            let fan_in = if name.ends_with(".weight") {
                t.size()[1]
            } else {
                // The bias shares the weight's bound: fan_in is the weight's second dimension.
                net.named_tensors()[&name.replace(".bias", ".weight")].size()[1]
            };
            let bound = 1.0 / (fan_in as f64).sqrt();
            if value(&|t| t.abs().max()) > bound {
                failures.push(format!("{name}: outside +-1/sqrt({fan_in})"));
            }
        } else if name.ends_with("conv.weight")
            || name.contains(".conv1.")
            || name.contains(".conv2.")
        {
            let size = t.size();
            // Conv `C_out` of the whole layer: G slices for a backbone conv, 1 for a classifier conv.
            let groups = if name.contains("aux.") || name.starts_with("head.") {
                1
            } else {
                2
            };
            let key = format!("{}x{}", size[0] * groups, size[2]);
            pooled.entry(key).or_default().push(t.flatten(0, -1));
        }
    }
    for (key, parts) in pooled {
        let mut it = key.split('x').map(|v| v.parse::<f64>().unwrap());
        let (cout, k) = (it.next().unwrap(), it.next().unwrap());
        let all = Tensor::cat(&parts, 0);
        let n = all.size()[0];
        let std = all.std(true).double_value(&[]);
        let want = (2.0 / (k * k * cout)).sqrt();
        if n >= 1000 && (std / want - 1.0).abs() > 0.1 {
            failures.push(format!(
                "conv C_out {cout} k {k}: std {std:.4} vs {want:.4} over {n} weights"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} init mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// InfoPro's decoder loss (scripts/golden/make_infopro.py): output, BCE, every parameter gradient, the
/// input gradient and the BN statistics after a training-mode forward match PyTorch in float64.
#[test]
fn golden_infopro_decoder_matches_pytorch() {
    let fixture = read_tensors("infopro.safetensors");
    let meta = read_json("infopro.json");
    let mut vs = tch::nn::VarStore::new(Device::Cpu);
    let decoder = groupwise::model::Decoder::new(&vs.root(), 6, 12, 3, 16);
    vs.double();
    let vars = vs.variables();
    assert_eq!(vars.len(), 8, "{:?}", vars.keys().collect::<Vec<_>>());
    tch::no_grad(|| {
        for (name, var) in &vars {
            let init = fixture
                .get(&format!("init.{name}"))
                .unwrap_or_else(|| panic!("fixture lacks init.{name}"));
            var.shallow_clone().copy_(init);
        }
    });
    let features = fixture["input.features"].copy().set_requires_grad(true);
    let out = decoder.forward_t(&features, true);
    let bce = loss::reconstruction(&out, &fixture["input.target"]);
    bce.backward();
    let (mut worst, mut failures) = (Worst::default(), Vec::new());
    check_scalar(
        "loss",
        bce.double_value(&[]),
        meta["loss"].as_f64().unwrap(),
        &mut worst,
        &mut failures,
    );
    check_tensor(
        "output",
        &out,
        &fixture["output"],
        &mut worst,
        &mut failures,
    );
    check_tensor(
        "grad.features",
        &features.grad(),
        &fixture["grad.features"],
        &mut worst,
        &mut failures,
    );
    for (name, var) in &vars {
        if name.contains("running") {
            let want = &fixture[&format!("after.{name}")];
            check_tensor(name, var, want, &mut worst, &mut failures);
        } else {
            let want = &fixture[&format!("grad.{name}")];
            check_tensor(
                &format!("grad.{name}"),
                &var.grad(),
                want,
                &mut worst,
                &mut failures,
            );
        }
    }
    println!(
        "infopro: worst relative error {:.3e} ({})",
        worst.rel, worst.name
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
