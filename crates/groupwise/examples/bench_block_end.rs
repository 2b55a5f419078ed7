//! Forward + backward time of a residual block's end, `relu(batch_norm(x) + shortcut)`, at batch
//! 128 and ResNet-32's shapes: as one pass of groupwise's batch norm
//! ([`BatchNorm::forward_add_relu_t`]) against its batch norm followed by libtorch's add and ReLU
//! (how blocks ended before), interleaved, best of `ROUNDS`, at 1 and 2 intra-op threads. The
//! shortcut is contiguous (an identity or a shortcut conv's batch norm) or a channel slice of a
//! wider input (the first block after a module boundary with G groups).
//!
//! Usage: `cargo run --release -p groupwise --example bench_block_end [ROUNDS]`

use std::time::Instant;

use groupwise::model::{batch_norm2d, BatchNorm};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

/// (channels, image size, channels of the tensor the shortcut is sliced from: 0 for none).
const SHAPES: [(i64, i64, i64); 6] = [
    (16, 32, 0),
    (32, 16, 0),
    (64, 8, 0),
    (4, 32, 16),
    (8, 16, 32),
    (16, 8, 64),
];

/// Seconds of one forward + backward of the block's end, fused or not (with the product by `g` and
/// the sum that make the gradient, the same in both).
fn time(bn: &BatchNorm, x: &Tensor, shortcut: &Tensor, g: &Tensor, fused: bool) -> f64 {
    let x = x.detach().set_requires_grad(true);
    let start = Instant::now();
    let y = if fused {
        bn.forward_add_relu_t(&x, shortcut, true)
    } else {
        (bn.forward_t(&x, true) + shortcut).relu()
    };
    (y * g).sum(Kind::Float).backward();
    start.elapsed().as_secs_f64()
}

fn main() {
    groupwise::device::keep_freed_memory();
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|r| r.parse().expect("ROUNDS: a number"))
        .unwrap_or(30);
    let opts = (Kind::Float, Device::Cpu);
    println!("batch 128, forward + backward of relu(batch_norm(x) + shortcut), best of {rounds}");
    println!(
        "{:>8} {:>5} {:>9} {:>7} {:>12} {:>12} {:>7}",
        "channels", "size", "shortcut", "threads", "unfused ms", "fused ms", "ratio"
    );
    for threads in [1, 2] {
        groupwise::device::set_intra_op_threads(threads);
        for (c, size, wide) in SHAPES {
            let vs = nn::VarStore::new(Device::Cpu);
            let bn = batch_norm2d(vs.root(), c);
            let x = Tensor::randn([128, c, size, size], opts);
            let g = Tensor::randn([128, c, size, size], opts);
            let source =
                Tensor::randn([128, wide.max(c), size, size], opts).set_requires_grad(true);
            let shortcut = source.narrow(1, 0, c);
            let (mut unfused, mut fused) = (f64::INFINITY, f64::INFINITY);
            for _ in 0..rounds {
                unfused = unfused.min(time(&bn, &x, &shortcut, &g, false));
                fused = fused.min(time(&bn, &x, &shortcut, &g, true));
            }
            let what = if wide > 0 { "slice" } else { "whole" };
            println!(
                "{c:>8} {size:>5} {what:>9} {threads:>7} {:>12.3} {:>12.3} {:>7.2}",
                unfused * 1e3,
                fused * 1e3,
                fused / unfused
            );
        }
    }
}
