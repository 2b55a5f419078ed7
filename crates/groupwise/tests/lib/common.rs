//! What more than one test module needs: scratch directories, the small synthetic run the training
//! tests start from, and the lock that keeps their use of libtorch's global generator apart.

use std::ops::Deref;
use std::path::Path;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use groupwise::checkpoint::{self, Progress};
use groupwise::data::{DataSpec, DatasetKind, SyntheticSpec};
use groupwise::device::DeviceChoice;
use groupwise::local::{LossConfig, Network, SgdConfig};
use groupwise::plan::AuxInput;
use groupwise::schedule::Schedule;
use groupwise::train::RunConfig;
use tch::Tensor;

/// A fresh directory under the system temp dir, removed on drop. It derefs to its path, so a test
/// writes `dir.join(..)` and passes `&dir` where a `&Path` is wanted.
pub struct Scratch(tempfile::TempDir);

/// A scratch directory whose name starts with `groupwise-<tag>-`.
pub fn scratch(tag: &str) -> Scratch {
    let dir = tempfile::Builder::new()
        .prefix(&format!("groupwise-{tag}-"))
        .tempdir()
        .expect("create a scratch directory");
    Scratch(dir)
}

impl Scratch {
    /// The directory.
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        self.0.path()
    }
}

/// Two epochs of the smallest run the training tests make: one block per stage of widths 4,4,8,8 on
/// synthetic 3x16x16 images of 4 classes (`train` of them, 40 test images), stop-gradient auxiliary
/// input, batch 32, lr 0.05 halved after epoch 2, seed 7, on the CPU with one thread and two loader
/// workers. A test overrides what it varies.
pub fn synthetic_run(plan: &str, groups: i64, train: usize) -> RunConfig {
    RunConfig {
        data: DataSpec {
            kind: DatasetKind::Synthetic,
            synthetic: SyntheticSpec {
                channels: 3,
                size: 16,
                classes: 4,
                train,
                test: 40,
            },
            ..DataSpec::default()
        },
        blocks_per_stage: 1,
        widths: [4, 4, 8, 8],
        plan: plan.parse().expect("a valid plan"),
        groups,
        aux_input: AuxInput::StopGradient,
        loss: LossConfig::default(),
        sgd: SgdConfig::default(),
        lr: 0.05,
        schedule: Schedule::Step {
            milestones: vec![2],
            gamma: 0.5,
        },
        epochs: 2,
        batch_size: 32,
        eval_batch_size: 40,
        seed: 7,
        device: DeviceChoice::Cpu,
        threads: 1,
        loader_workers: 2,
        augment: true,
        shuffle: true,
        init_from: None,
        eval_every: 1,
    }
}

/// libtorch's random generator is global to the process, which every test now shares. A run seeds it
/// and draws its initial weights under the library's own lock (`train::prepare`), which tests cannot
/// take; a draw of another test between the two would change the run's weights and break the tests
/// that compare runs of one seed. So a test that draws from the generator outside a run (a network or
/// a `VarStore` of its own, `Tensor::randn`) holds [`exclusive_rng`], and a test holds [`seeded_runs`]
/// while it runs training. Never hold either twice in one thread: a waiting writer blocks a second read.
static TORCH_RNG: RwLock<()> = RwLock::new(());

/// Held while a test draws from libtorch's generator itself (see [`TORCH_RNG`]).
pub fn exclusive_rng() -> RwLockWriteGuard<'static, ()> {
    TORCH_RNG.write().unwrap_or_else(|e| e.into_inner())
}

/// Held while a test runs training, whose initial weights come from libtorch's generator (see
/// [`TORCH_RNG`]); runs may overlap each other.
pub fn seeded_runs() -> RwLockReadGuard<'static, ()> {
    TORCH_RNG.read().unwrap_or_else(|e| e.into_inner())
}

/// `net`'s state as a resumed run reads it: every tensor (copies), a momentum buffer of ones beside
/// each, and `progress`.
pub fn resumable_state(net: &Network, progress: Progress) -> Vec<(String, Tensor)> {
    let mut named: Vec<(String, Tensor)> = checkpoint::named_state(net, progress)
        .into_iter()
        .map(|(n, t)| (n, t.copy()))
        .collect();
    named.extend(
        net.named_tensors()
            .into_iter()
            .map(|(n, t)| (format!("momentum.{n}"), t.ones_like())),
    );
    named
}
