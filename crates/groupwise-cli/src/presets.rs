//! Named presets: complete run configurations, each value with its reason.

use groupwise::data::{DataSpec, DatasetKind, SyntheticSpec};
use groupwise::device::DeviceChoice;
use groupwise::local::{LossConfig, SgdConfig};
use groupwise::plan::AuxInput;
use groupwise::schedule::Schedule;
use groupwise::train::RunConfig;

/// Names accepted by `--preset`.
pub const NAMES: &[&str] = &["quick", "paper", "smoke"];

/// The preset called `name`.
pub fn preset(name: &str) -> Option<RunConfig> {
    match name {
        "quick" => Some(quick()),
        "paper" => Some(paper()),
        "smoke" => Some(smoke()),
        _ => None,
    }
}

/// The paper's setting (METHOD.md section 5) for ResNet-32, GN-DGL K=4, G=2, stop-gradient input with
/// the diversity term, on Fashion-MNIST (pass `--dataset cifar10 --data-dir ...` for the paper's data).
fn paper() -> RunConfig {
    RunConfig {
        data: DataSpec::default(),
        blocks_per_stage: 5,               // ResNet-32
        widths: [16, 16, 32, 64],          // the paper's ResNet-32 (x2: 32,32,64,128)
        plan: "4".into(),                  // K=4 from the paper's table
        groups: 2,                         // G=2
        aux_input: AuxInput::StopGradient, // the paper's main setting
        loss: LossConfig::default(),       // lambda 0.5, T 3.0
        sgd: SgdConfig::default(),         // Nesterov 0.9, wd 1e-4
        lr: 0.8,                           // lr0 for batch 1024
        schedule: Schedule::Cosine { warmup_epochs: 10 },
        epochs: 160,
        batch_size: 1024,
        eval_batch_size: 1024,
        seed: 0,
        device: DeviceChoice::Cpu,
        threads: 0, // libtorch's default: one per core
        loader_workers: 2,
        augment: true,
        shuffle: true,
        max_steps: None,
        init_from: None,
        eval_every: 1,
    }
}

/// The README's main job: GN-DGL (K=4, G=2, stop-gradient, diversity) on Fashion-MNIST in minutes on a
/// 2-core laptop. Same method and optimizer as `paper`; the budget is cut so it finishes quickly.
fn quick() -> RunConfig {
    RunConfig {
        data: DataSpec {
            // 20k of the 60k training images: enough for ~90% test accuracy in three epochs.
            train_subset: Some(20_000),
            ..DataSpec::default()
        },
        blocks_per_stage: 3, // ResNet-20: a lighter backbone with the same three stages
        widths: [16, 16, 32, 64], // the paper's widths
        epochs: 3,
        batch_size: 128, // more steps per epoch than the paper's 1024 on a short budget
        lr: 0.1,         // lr0 scaled down with the batch (0.8 * 128 / 1024)
        // The paper's cosine sets epoch E's rate to 0, a third of a 3-epoch budget: decay 10x for the
        // last epoch instead.
        schedule: Schedule::Step {
            milestones: vec![3],
            gamma: 0.1,
        },
        eval_batch_size: 500,
        ..paper()
    }
}

/// A seconds-long run on synthetic data with tiny widths: for tests and first checks.
fn smoke() -> RunConfig {
    RunConfig {
        data: DataSpec {
            kind: DatasetKind::Synthetic,
            synthetic: SyntheticSpec {
                channels: 3,
                size: 16,
                classes: 4,
                train: 256,
                test: 64,
            },
            ..DataSpec::default()
        },
        blocks_per_stage: 1,
        widths: [4, 4, 8, 8],
        epochs: 1,
        batch_size: 32,
        eval_batch_size: 64,
        lr: 0.05,
        // Constant rate: the cosine would give the only epoch a rate of 0.
        schedule: Schedule::Step {
            milestones: vec![],
            gamma: 1.0,
        },
        loader_workers: 1,
        ..paper()
    }
}
