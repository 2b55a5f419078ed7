//! [`RunConfig::validate`](super::RunConfig::validate): one row per setting and rule, and the edge
//! values that must pass.

use super::*;
use crate::data::SyntheticSpec;
use crate::local::InfoPro;
use crate::parallel::max_threads;

/// A small valid config: ResNet-8 of widths 4,4,8,8, K=2 x G=2 on 96 + 40 synthetic 3x16x16
/// images of 4 classes, 3 epochs of the step schedule.
fn base() -> RunConfig {
    RunConfig {
        data: DataSpec {
            kind: DatasetKind::Synthetic,
            synthetic: SyntheticSpec {
                channels: 3,
                size: 16,
                classes: 4,
                train: 96,
                test: 40,
            },
            ..DataSpec::default()
        },
        blocks_per_stage: 1,
        widths: [4, 4, 8, 8],
        plan: "2".parse().unwrap(),
        groups: 2,
        aux_input: AuxInput::StopGradient,
        loss: LossConfig::default(),
        sgd: SgdConfig::default(),
        lr: 0.05,
        schedule: Schedule::Step {
            milestones: vec![2],
            gamma: 0.5,
        },
        epochs: 3,
        batch_size: 32,
        eval_batch_size: 40,
        seed: 0,
        device: DeviceChoice::Cpu,
        threads: 1,
        loader_workers: 1,
        augment: true,
        shuffle: true,
        init_from: None,
        eval_every: 1,
    }
}

fn cosine(c: &mut RunConfig, warmup_epochs: usize) {
    c.schedule = Schedule::Cosine { warmup_epochs };
}

fn step(c: &mut RunConfig, milestones: &[usize], gamma: f64) {
    c.schedule = Schedule::Step {
        milestones: milestones.to_vec(),
        gamma,
    };
}

type Mutation = fn(&mut RunConfig);

/// One row per rule: the setting made invalid, and a fragment of the one-line message, which
/// names the flag (or config key), the value and the allowed range.
const INVALID: &[(&str, Mutation, &str)] = &[
    (
        "train_subset 0",
        |c| c.data.train_subset = Some(0),
        "--train-subset 0 must be at least 1",
    ),
    (
        "train_subset > synthetic train",
        |c| c.data.train_subset = Some(97),
        "--train-subset 97 must be between 1 and 96",
    ),
    (
        "synthetic train 0",
        |c| c.data.synthetic.train = 0,
        "--synthetic 16,3,4,0,40: training images 0 must be at least 1",
    ),
    (
        "synthetic test 0",
        |c| c.data.synthetic.test = 0,
        "--synthetic 16,3,4,96,0: test images 0 must be at least 1",
    ),
    (
        "synthetic size",
        |c| c.data.synthetic.size = 4,
        "image size 4 must be at least 8",
    ),
    (
        "synthetic channels",
        |c| c.data.synthetic.channels = 0,
        "channels 0 must be at least 1",
    ),
    (
        "synthetic 1 class",
        |c| c.data.synthetic.classes = 1,
        "classes 1 must be between 2 and 65536",
    ),
    (
        "synthetic too many classes",
        |c| c.data.synthetic.classes = 65537,
        "classes 65537 must be between 2 and 65536",
    ),
    (
        "blocks_per_stage",
        |c| c.blocks_per_stage = 0,
        "blocks per stage (depth 6n+2) must be at least 1",
    ),
    (
        "widths",
        |c| c.widths = [4, 4, 8, 0],
        "every width must be at least 1",
    ),
    (
        "plan",
        |c| c.plan = "3:5".parse().unwrap(),
        "boundary (3,5) is outside ResNet-8",
    ),
    ("groups 0", |c| c.groups = 0, "--groups must be at least 1"),
    (
        "groups not dividing",
        |c| c.groups = 3,
        "--groups 3 does not divide width 4",
    ),
    (
        "aux ratio",
        |c| c.aux_input = AuxInput::Partial(1.5),
        "--aux-ratio 1.5 must lie in (0, 1)",
    ),
    (
        "diversity weight < 0",
        |c| c.loss.diversity_weight = -0.5,
        "--diversity-weight -0.5 must be a finite number >= 0",
    ),
    (
        "diversity weight NaN",
        |c| c.loss.diversity_weight = f64::NAN,
        "--diversity-weight NaN must be",
    ),
    (
        "diversity weight inf",
        |c| c.loss.diversity_weight = f64::INFINITY,
        "--diversity-weight inf must be",
    ),
    (
        "temperature 0",
        |c| c.loss.temperature = 0.0,
        "--temperature 0 must be a finite number > 0",
    ),
    (
        "temperature < 0",
        |c| c.loss.temperature = -3.0,
        "--temperature -3 must be",
    ),
    (
        "temperature inf",
        |c| c.loss.temperature = f64::INFINITY,
        "--temperature inf must be",
    ),
    (
        "infopro weight",
        |c| {
            c.loss.infopro = Some(InfoPro {
                reconstruction: [-1.0, 1.0],
                ..InfoPro::default()
            })
        },
        "reconstruction [-1.0, 1.0] and classification [1.0, 1.0] must be",
    ),
    (
        "infopro decoder",
        |c| {
            c.loss.infopro = Some(InfoPro {
                decoder_width: 0,
                ..InfoPro::default()
            })
        },
        "loss.infopro.decoder_width 0 must be at least 1",
    ),
    (
        "momentum 5",
        |c| c.sgd.momentum = 5.0,
        "--momentum 5 must be in [0, 1)",
    ),
    (
        "momentum 1",
        |c| c.sgd.momentum = 1.0,
        "--momentum 1 must be in [0, 1)",
    ),
    (
        "momentum < 0",
        |c| c.sgd.momentum = -0.1,
        "--momentum -0.1 must be in [0, 1)",
    ),
    (
        "momentum NaN",
        |c| c.sgd.momentum = f64::NAN,
        "--momentum NaN must be in [0, 1)",
    ),
    (
        "weight decay < 0",
        |c| c.sgd.weight_decay = -1.0,
        "--weight-decay -1 must be a finite number >= 0",
    ),
    (
        "weight decay NaN",
        |c| c.sgd.weight_decay = f64::NAN,
        "--weight-decay NaN must be",
    ),
    ("lr 0", |c| c.lr = 0.0, "--lr 0 must be a finite number > 0"),
    ("lr < 0", |c| c.lr = -0.1, "--lr -0.1 must be"),
    ("lr inf", |c| c.lr = f64::INFINITY, "--lr inf must be"),
    (
        "warm-up = epochs",
        |c| cosine(c, 3),
        "--warmup-epochs 3 must be below --epochs 3 (0 for none)",
    ),
    (
        "gamma < 0",
        |c| step(c, &[2], -1.0),
        "--gamma -1 must be a finite number > 0",
    ),
    ("gamma 0", |c| step(c, &[2], 0.0), "--gamma 0 must be"),
    (
        "gamma NaN",
        |c| step(c, &[2], f64::NAN),
        "--gamma NaN must be",
    ),
    (
        "milestones unsorted",
        |c| step(c, &[3, 2], 0.1),
        "--milestones 3,2 must be strictly increasing epochs >= 1",
    ),
    (
        "milestones repeated",
        |c| step(c, &[2, 2], 0.1),
        "--milestones 2,2 must be strictly increasing",
    ),
    (
        "milestone 0",
        |c| step(c, &[0, 2], 0.1),
        "--milestones 0,2 must be strictly increasing epochs >= 1",
    ),
    ("epochs", |c| c.epochs = 0, "--epochs 0 must be at least 1"),
    (
        "batch size",
        |c| c.batch_size = 0,
        "--batch-size 0 must be at least 1",
    ),
    (
        "eval batch size",
        |c| c.eval_batch_size = 0,
        "--eval-batch-size 0 must be at least 1",
    ),
    (
        "threads",
        |c| c.threads = 100_000,
        "--threads 100000 must be between 0 and ",
    ),
    (
        "loader workers",
        |c| c.loader_workers = 100_000,
        "--loader-workers 100000 must be between 0 and ",
    ),
    (
        "eval every",
        |c| c.eval_every = 0,
        "--eval-every 0 must be at least 1",
    ),
];

/// Edge values that must pass.
const VALID: &[(&str, Mutation)] = &[
    ("plain SGD", |c| {
        c.sgd = SgdConfig {
            momentum: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        }
    }),
    ("momentum just below 1", |c| c.sgd.momentum = 0.999),
    ("no diversity term", |c| c.loss.diversity_weight = 0.0),
    ("tiny temperature", |c| c.loss.temperature = 1e-6),
    ("infopro with zero weights", |c| {
        c.loss.infopro = Some(InfoPro {
            reconstruction: [0.0, 0.0],
            classification: [0.0, 1.0],
            decoder_width: 1,
        })
    }),
    ("no warm-up, one epoch", |c| {
        c.epochs = 1;
        cosine(c, 0)
    }),
    ("warm-up one epoch short of the run", |c| cosine(c, 2)),
    ("constant rate", |c| step(c, &[], 1.0)),
    ("milestone 1", |c| step(c, &[1], 0.1)),
    ("milestones past the run", |c| step(c, &[1, 3, 10], 0.1)),
    ("one epoch", |c| c.epochs = 1),
    ("libtorch's default threads, loading on the caller", |c| {
        c.threads = 0;
        c.loader_workers = 0
    }),
    ("the most threads", |c| {
        c.threads = max_threads();
        c.loader_workers = max_threads()
    }),
    ("subset of 1", |c| c.data.train_subset = Some(1)),
    ("subset of all", |c| c.data.train_subset = Some(96)),
    ("smallest synthetic data", |c| {
        c.data.synthetic = SyntheticSpec {
            channels: 1,
            size: 8,
            classes: 2,
            train: 1,
            test: 1,
        }
    }),
    ("most synthetic classes", |c| {
        c.data.synthetic.classes = 65536
    }),
    ("batch larger than the data", |c| c.batch_size = 1000),
    ("rare evaluation", |c| c.eval_every = 100),
    (
        "subset of a real dataset, not checked before reading",
        |c| {
            c.data.kind = DatasetKind::FashionMnist;
            c.data.synthetic.train = 0;
            c.data.train_subset = Some(1_000_000)
        },
    ),
];

#[test]
fn every_invalid_setting_is_rejected_with_its_flag_value_and_range() {
    // Names every field, so that a new one does not compile until it has a row in INVALID or
    // is listed in `validate`'s doc among the settings without a rule.
    let RunConfig {
        data:
            DataSpec {
                kind: _,
                path: _,
                synthetic:
                    SyntheticSpec {
                        channels: _,
                        size: _,
                        classes: _,
                        train: _,
                        test: _,
                    },
                train_subset: _,
                seed: _,
            },
        blocks_per_stage: _,
        widths: _,
        plan: _,
        groups: _,
        aux_input: _,
        loss:
            LossConfig {
                diversity_weight: _,
                temperature: _,
                infopro: _,
            },
        sgd:
            SgdConfig {
                momentum: _,
                weight_decay: _,
                nesterov: _,
            },
        lr: _,
        schedule: _,
        epochs: _,
        batch_size: _,
        eval_batch_size: _,
        seed: _,
        device: _,
        threads: _,
        loader_workers: _,
        augment: _,
        shuffle: _,
        init_from: _,
        eval_every: _,
    } = base();
    assert_eq!(base().validate(), Ok(()));
    let mut failures = Vec::new();
    for (name, mutate, want) in INVALID {
        let mut c = base();
        mutate(&mut c);
        match c.validate() {
            Ok(()) => failures.push(format!("{name}: accepted")),
            Err(ConfigError(m)) if !m.contains(want) || m.contains('\n') => {
                failures.push(format!("{name}: `{m}` lacks `{want}`"))
            }
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn valid_edge_values_pass() {
    for (name, mutate) in VALID {
        let mut c = base();
        mutate(&mut c);
        assert_eq!(c.validate(), Ok(()), "{name}");
    }
}

#[test]
fn thread_limits_name_this_machines_cores() {
    let mut c = base();
    c.threads = max_threads() + 1;
    let m = c.validate().unwrap_err().0;
    let cores = crate::parallel::cores();
    assert!(
        m.contains(&format!("this machine has {cores} cores")),
        "{m}"
    );
}
