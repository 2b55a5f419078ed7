//! Forward + backward time of single 3x3 convolutions at batch 128: the network's [`Conv`]
//! (groupwise's kernel where `model/conv.rs` picks it for the shape) against libtorch's convolution
//! of the same weight on NCHW tensors, interleaved, best of `ROUNDS`, at 1 and 2 intra-op threads.
//! What the kernel's shape rule was measured with. A row with a slice is an auxiliary classifier's
//! stop-gradient input: only the first `slice` input channels want a gradient
//! ([`Conv::forward_own_slice`] against libtorch's convolution of the own slice concatenated with
//! the detached rest, as the reference implementation computes it).
//!
//! Usage: `cargo run --release -p groupwise --example bench_conv_layers [ROUNDS]`

use std::time::Instant;

use groupwise::model::{conv2d, Conv};
use tch::nn;
use tch::{Device, Kind, Tensor};

/// (input channels, output channels, image size, stride, channels that want a gradient).
const SHAPES: [(i64, i64, i64, i64, i64); 17] = [
    (3, 4, 32, 1, 0),
    (4, 4, 32, 1, 4),
    (16, 4, 32, 1, 16),
    (8, 8, 32, 1, 8),
    (3, 16, 32, 1, 0),
    (16, 16, 32, 1, 16),
    (8, 8, 16, 1, 8),
    (8, 8, 8, 1, 8),
    (4, 8, 32, 2, 4),
    (8, 16, 32, 2, 8),
    (8, 16, 16, 2, 8),
    (16, 32, 16, 2, 16),
    (16, 32, 32, 2, 16),
    (16, 32, 32, 2, 8),
    (16, 32, 32, 2, 4),
    (32, 64, 16, 2, 16),
    (64, 128, 8, 2, 32),
];

fn main() {
    groupwise::device::keep_freed_memory();
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|r| r.parse().expect("ROUNDS: a number"))
        .unwrap_or(5);
    let opts = (Kind::Float, Device::Cpu);
    println!("cin cout size stride slice threads   network conv ms   libtorch ms   ratio");
    for threads in [1, 2] {
        groupwise::device::set_intra_op_threads(threads);
        for (cin, cout, size, stride, wanted) in SHAPES {
            let vs = nn::VarStore::new(Device::Cpu);
            let conv: Conv = conv2d(vs.root(), cin, cout, 3, stride, 0.1);
            // The part that wants a gradient (none for the image, 3 channels, like the stem), and
            // the input: that part, or it before the detached rest (one image's build every round).
            let own =
                Tensor::randn([128, wanted.max(1), size, size], opts).set_requires_grad(wanted > 0);
            let rest = Tensor::randn([128, cin - wanted.max(1), size, size], opts);
            let mut best = [f64::MAX; 2];
            for _ in 0..rounds {
                for (side, slot) in best.iter_mut().enumerate() {
                    let start = Instant::now();
                    let x = if rest.size()[1] > 0 {
                        Tensor::cat(&[&own, &rest], 1)
                    } else {
                        own.shallow_clone()
                    };
                    let y = if side == 0 {
                        conv.forward_own_slice(&x, &own, 0)
                    } else {
                        let (s, w) = ([stride; 2], conv.weight());
                        x.conv2d(w, None::<Tensor>, s, [1, 1], [1, 1], 1)
                    };
                    y.sum(Kind::Float).backward();
                    *slot = slot.min(start.elapsed().as_secs_f64());
                }
            }
            let slice = if wanted > 0 && wanted < cin {
                wanted.to_string()
            } else {
                "-".into()
            };
            println!(
                "{cin:>3} {cout:>4} {size:>4} {stride:>6} {slice:>5} {threads:>7} {:>17.2} {:>13.2} {:>7.2}",
                best[0] * 1e3,
                best[1] * 1e3,
                best[0] / best[1]
            );
        }
    }
}
