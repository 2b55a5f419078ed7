//! The parts on their own: the diversity term, the cosine schedule, one unit's isolation, the
//! initialisation, InfoPro's decoder loss.

use super::*;

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
    let rng = exclusive_rng();
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
    drop(rng);
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
        .map(|(u, o)| u.forward_aux(&u.aux_input(o, &slices), o, true))
        .collect();
    assert!(logits[1].requires_grad(), "peer logits are live");

    // Snapshot after the forwards (train-mode forwards move the BN statistics of both groups).
    let before: BTreeMap<String, Tensor> = net
        .named_tensors()
        .into_iter()
        .map(|(n, t)| (n, t.copy()))
        .collect();
    let images = Tensor::zeros([4, 3, 32, 32], (Kind::Float, Device::Cpu));
    let stats = net.units[1][0].backward(&aux_in, &logits[0], &logits, &labels, &images);
    net.units[1][0].update(0.1);
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
    let rng = exclusive_rng();
    tch::manual_seed(5);
    let arch = Arch::resnet32(3, 32, 10);
    let plan = Plan::new(arch, "4", 2, AuxInput::StopGradient).unwrap();
    let net = Network::new(
        &plan,
        LossConfig::default(),
        SgdConfig::default(),
        Device::Cpu,
    );
    drop(rng);
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

/// Per channel, the sum over batch and positions of `|d loss / d y|`, `y` the output of the decoder's
/// conv1: the size of the terms whose sum is conv1's bias gradient. The decoder does not expose `y`,
/// so its layers (as `scripts/golden/make_infopro.py` writes them) are rerun here on detached copies
/// of its tensors, with `y` a leaf; the rerun's output is returned to be checked against the decoder's.
fn conv1_output_grad_mass(
    vars: &HashMap<String, Tensor>,
    features: &Tensor,
    target: &Tensor,
) -> (Tensor, Tensor) {
    let v = |name: &str| vars[name].detach();
    let size = target.size()[2];
    let up = features
        .detach()
        .upsample_bilinear2d([size, size], true, None, None);
    let y = up
        .conv2d(&v("conv1.weight"), Some(v("conv1.bias")), 1, 1, 1, 1)
        .detach()
        .set_requires_grad(true);
    let (gamma, beta) = (v("bn.weight"), v("bn.bias"));
    let h = y
        .batch_norm(
            Some(&gamma),
            Some(&beta),
            None,
            None,
            true,
            0.1,
            1e-5,
            false,
        )
        .relu();
    let out = h
        .conv2d(&v("conv2.weight"), Some(v("conv2.bias")), 1, 1, 1, 1)
        .sigmoid();
    loss::reconstruction(&out, target).backward();
    let mass = y
        .grad()
        .abs()
        .sum_dim_intlist([0, 2, 3].as_slice(), false, Kind::Double);
    (mass, out.detach())
}

/// InfoPro's decoder loss (scripts/golden/make_infopro.py): output, BCE, every parameter gradient, the
/// input gradient and the BN statistics after a training-mode forward match PyTorch in float64.
///
/// Except `grad.conv1.bias`, which is zero in exact arithmetic: BN follows conv1 and its output does not
/// change when a channel of its input is shifted, so `d loss / d bias_c`, the sum over the N = B*H*W =
/// 1024 entries of channel c of `d loss / d y` (y = conv1's output), is zero. PyTorch's and our float64
/// values are that sum's rounding residue (~1e-17), which a relative measure cannot compare (the
/// kernels of an AVX2 CPU give a relative error of 3.6). Summing N terms in floating point is off by at
/// most (N - 1) u Sum|terms| (Higham, Accuracy and Stability of Numerical Algorithms, section 4.2),
/// and each term carries a few u of rounding from BN's backward: so each channel is held to
/// N * u * Sum|d loss / d y_c| in absolute value, u = 2^-53, Sum|..| measured by
/// [`conv1_output_grad_mass`]. A missing BN, or a bias gradient taken from the wrong tensor, is of the
/// order of Sum|d loss / d y_c| / sqrt(N), about 1e11 times that bound.
#[test]
fn golden_infopro_decoder_matches_pytorch() {
    let fixture = read_tensors("infopro.safetensors");
    let meta = read_json("infopro.json");
    let mut vs = tch::nn::VarStore::new(Device::Cpu);
    let rng = exclusive_rng();
    let decoder = groupwise::model::Decoder::new(&vs.root(), 6, 12, 3, 16);
    drop(rng);
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
    // The zero-in-exact-arithmetic bias gradient, against the rounding bound of the sum it is.
    let (mass, rerun) = conv1_output_grad_mass(&vars, &features, &fixture["input.target"]);
    check_tensor(
        "output (rerun for the bias bound)",
        &rerun,
        &fixture["output"],
        &mut worst,
        &mut failures,
    );
    let size = fixture["input.target"].size();
    let terms = (size[0] * size[2] * size[3]) as f64;
    let bound = &mass * (terms * f64::EPSILON / 2.0);
    let bias_ratio = |grad: &Tensor| (grad.abs() / &bound).max().double_value(&[]);
    let (ours, theirs) = (
        bias_ratio(&vars["conv1.bias"].grad()),
        bias_ratio(&fixture["grad.conv1.bias"]),
    );
    println!(
        "infopro: grad.conv1.bias (zero in exact arithmetic) at most {ours:.2e} of its rounding bound \
         N u Sum|d loss / d y_c| = {:.2e}..{:.2e} (PyTorch's: {theirs:.2e}); largest entry {:.2e}",
        bound.min().double_value(&[]),
        bound.max().double_value(&[]),
        vars["conv1.bias"].grad().abs().max().double_value(&[])
    );
    if ours.is_nan() || ours > 1.0 {
        failures.push(format!("grad.conv1.bias: {ours:.3e} of its rounding bound"));
    }
    for (name, var) in &vars {
        if name == "conv1.bias" {
            continue;
        }
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
