//! Non-finite state: a checkpoint or `--init-from` file holding NaN or infinite weights, BN statistics
//! or momentum is refused naming the file and the tensor (it used to load, and evaluate to chance);
//! a run that diverges names the loss and the setting at fault (it used to say "a loss is NaN (try a
//! smaller --lr)" whatever the cause).

use std::path::Path;

use groupwise::checkpoint::{self, Progress, Restore};
use groupwise::local::Network;
use groupwise::train::{self, Invocation, RunConfig, RunDir, TrainError};
use tch::{Device, Tensor};

use crate::common::{exclusive_rng, resumable_state, scratch, seeded_runs, synthetic_run};

/// The small K=2, G=2 synthetic run of these tests.
fn config() -> RunConfig {
    synthetic_run("2", 2, 64)
}

/// A fresh network of `config()` and its state as a resumed run reads it: every tensor, a momentum
/// buffer beside each, and progress (copies: a failed load leaves the network half assigned).
fn state() -> (Network, Vec<(String, Tensor)>) {
    let c = config();
    let plan = c.declared_plan().unwrap();
    let net = {
        let _rng = exclusive_rng();
        Network::new(&plan, c.loss, c.sgd, Device::Cpu)
    };
    let named = resumable_state(&net, Progress { epoch: 1, step: 0 });
    (net, named)
}

/// The first tensor name that satisfies `pick`.
fn name_where(named: &[(String, Tensor)], pick: impl Fn(&str) -> bool) -> String {
    named
        .iter()
        .map(|(n, _)| n.clone())
        .find(|n| pick(n))
        .expect("a tensor of that kind")
}

/// `named` with element 0 of tensor `name` set to `value`, written to `path`.
fn write_with(named: &[(String, Tensor)], name: &str, value: f64, path: &Path) {
    let edited: Vec<(String, Tensor)> = named
        .iter()
        .map(|(n, t)| {
            let t = t.copy();
            if n == name {
                let _ = t.view(-1).get(0).fill_(value);
            }
            (n.clone(), t)
        })
        .collect();
    checkpoint::write_atomic(&edited, path).unwrap();
}

#[test]
fn checkpoint_holding_nan_or_inf_is_refused_naming_the_tensor() {
    let dir = scratch("nonfinite-load");
    let path = dir.join("checkpoint.safetensors");
    let (mut net, named) = state();
    checkpoint::write_atomic(&named, &path).unwrap();
    checkpoint::load(&mut net, &path, Restore::State).expect("the clean state loads");

    let conv = name_where(&named, |n| {
        n.starts_with("m1.g0.") && n.ends_with("conv1.weight")
    });
    let bn = name_where(&named, |n| {
        n.starts_with("m0.g1.") && n.ends_with("running_var")
    });
    let head = name_where(&named, |n| n.starts_with("head.") && n.ends_with(".bias"));
    let momentum = name_where(&named, |n| n.starts_with("momentum.m0.g0."));
    for (what, name, value, restore, want) in [
        ("NaN weight", &conv, f64::NAN, Restore::Weights, "NaN"),
        (
            "inf weight",
            &conv,
            f64::INFINITY,
            Restore::State,
            "infinite",
        ),
        ("NaN BN statistic", &bn, f64::NAN, Restore::Weights, "NaN"),
        (
            "-inf head bias",
            &head,
            f64::NEG_INFINITY,
            Restore::Weights,
            "infinite",
        ),
        ("NaN momentum", &momentum, f64::NAN, Restore::State, "NaN"),
    ] {
        write_with(&named, name, value, &path);
        let err = checkpoint::load(&mut net, &path, restore)
            .expect_err(what)
            .to_string();
        let want = format!(
            "checkpoint {}: tensor '{name}' holds {want}",
            path.display()
        );
        assert!(err.starts_with(&want), "{what}: `{err}` lacks `{want}`");
        assert!(err.contains("(1 of "), "{what}: {err}");
    }
    // Weights only (`eval`, `--init-from`) ignore momentum, finite or not.
    write_with(&named, &momentum, f64::NAN, &path);
    checkpoint::load(&mut net, &path, Restore::Weights).expect("momentum is not read");
}

#[test]
fn init_from_a_nan_checkpoint_fails_before_training() {
    let dir = scratch("nonfinite-init");
    let init = dir.join("init.safetensors");
    let (_, named) = state();
    let conv = name_where(&named, |n| {
        n.starts_with("m0.g0.") && n.ends_with("conv1.weight")
    });
    write_with(&named, &conv, f64::NAN, &init);
    let mut c = config();
    c.init_from = Some(init.clone());
    let run = dir.join("run");
    let err = {
        let _runs = seeded_runs();
        train::run(&c, &run, &Invocation::new(false), &mut |_| {})
            .expect_err("a NaN init must fail")
    };
    assert!(matches!(err, TrainError::Checkpoint(_)), "{err:?}");
    let want = format!("checkpoint {}: tensor '{conv}' holds NaN", init.display());
    assert!(err.to_string().starts_with(&want), "`{err}` lacks `{want}`");
    assert!(!run.join(RunDir::CHECKPOINT).exists());
}

/// Runs `c` to its divergence; the error's message.
fn diverge(c: &RunConfig, tag: &str) -> String {
    let dir = scratch(tag);
    let _runs = seeded_runs();
    let err = train::run(c, &dir, &Invocation::new(false), &mut |_| {})
        .expect_err("the run must diverge");
    assert!(matches!(err, TrainError::Diverged { .. }), "{err:?}");
    err.to_string()
}

#[test]
fn divergence_from_a_large_learning_rate_names_the_cross_entropy_and_lr() {
    let mut c = config();
    c.lr = 1e30;
    let err = diverge(&c, "diverge-lr");
    assert!(
        err.starts_with("training diverged at epoch 1, step ")
            && err.contains("cross-entropy")
            && err.contains("--lr 1e30 is too large for this run: try a smaller --lr"),
        "{err}"
    );
}

#[test]
fn divergence_from_a_tiny_temperature_names_the_diversity_term_and_temperature() {
    // T = 1e-300 is 0 in float32: z / T is infinite and the softmax NaN, at the first step, while
    // the weights are still sound.
    let mut c = config();
    c.loss.temperature = 1e-300;
    let err = diverge(&c, "diverge-temperature");
    assert!(
        err.starts_with(
            "training diverged at epoch 1, step 1: the diversity term of module 0 is NaN"
        ) && err.contains("--temperature 1e-300: try a larger --temperature"),
        "{err}"
    );
}
