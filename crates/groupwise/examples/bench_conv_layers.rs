//! Forward + backward time of single 3x3 stride-1 convolutions at batch 128: the network's [`Conv`]
//! (groupwise's kernel where `model/conv.rs` picks it for the shape) against libtorch's convolution
//! of the same weight on NCHW tensors, interleaved, best of `ROUNDS`, at 1 and 2 intra-op threads.
//! What the kernel's shape rule was measured with.
//!
//! Usage: `cargo run --release -p groupwise --example bench_conv_layers [ROUNDS]`

use std::time::Instant;

use groupwise::model::{conv2d, Conv};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// (input channels, output channels, image size).
const SHAPES: [(i64, i64, i64); 8] = [
    (3, 4, 32),
    (4, 4, 32),
    (16, 4, 32),
    (8, 8, 32),
    (3, 16, 32),
    (16, 16, 32),
    (8, 8, 16),
    (8, 8, 8),
];

fn main() {
    groupwise::device::keep_freed_memory();
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|r| r.parse().expect("ROUNDS: a number"))
        .unwrap_or(5);
    let opts = (Kind::Float, Device::Cpu);
    println!("cin cout size threads   network conv ms   libtorch ms   ratio");
    for threads in [1, 2] {
        groupwise::device::set_intra_op_threads(threads);
        for (cin, cout, size) in SHAPES {
            let vs = nn::VarStore::new(Device::Cpu);
            let conv: Conv = conv2d(vs.root(), cin, cout, 3, 1, 0.1);
            // The image (3 channels) needs no input gradient, like the stem's.
            let x = Tensor::randn([128, cin, size, size], opts).set_requires_grad(cin > 3);
            let mut best = [f64::MAX; 2];
            for _ in 0..rounds {
                for (side, slot) in best.iter_mut().enumerate() {
                    let start = Instant::now();
                    let y = if side == 0 {
                        conv.forward(&x)
                    } else {
                        x.conv2d(conv.weight(), None::<Tensor>, [1, 1], [1, 1], [1, 1], 1)
                    };
                    y.sum(Kind::Float).backward();
                    *slot = slot.min(start.elapsed().as_secs_f64());
                }
            }
            println!(
                "{cin:>3} {cout:>4} {size:>4} {threads:>7} {:>17.2} {:>13.2} {:>7.2}",
                best[0] * 1e3,
                best[1] * 1e3,
                best[0] / best[1]
            );
        }
    }
}
