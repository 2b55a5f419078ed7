#!/usr/bin/env python3
"""Forward + backward time of one 3x3 convolution per backend, for the layer shapes of ResNet-32's nodes.

Backends: oneDNN on NCHW (`F.conv2d`, what libtorch picks for a batch of 128), oneDNN on channels-last,
the same with the conversions from and back to NCHW (what one channels-last layer costs in an NCHW
network: batch norm on CPU is slow on channels-last tensors with few channels), and im2col + GEMM (`torch._C._nn.thnn_conv2d`, libtorch's slow_conv2d). Rounds are interleaved
(backend A, B, C, A, B, C, ...) and the median is printed, with GMAC/s counting 3 x forward MACs.
What groupwise's per-layer convolution rule (crates/groupwise/src/model/conv.rs) was chosen from; that rule
now runs its own kernel for narrow stride-1 layers, which this script does not time.

Usage: python3 scripts/bench_conv.py [--threads 1] [--batch 128] [--rounds 5]
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

SHAPES = [  # (cin, cout, size, stride)
    (3, 4, 32, 1), (3, 8, 32, 1), (3, 16, 32, 1),
    (4, 4, 32, 1), (8, 8, 32, 1), (16, 16, 32, 1),
    (16, 32, 32, 2), (8, 16, 32, 2), (4, 8, 32, 2),
    (8, 8, 16, 1), (16, 16, 16, 1), (32, 32, 16, 1),
    (4, 4, 16, 1), (16, 16, 8, 1), (32, 32, 8, 1), (64, 64, 8, 1),
    # the classifiers' stride-2 convolutions (C -> 2C) at each stage
    (32, 64, 16, 2), (64, 128, 8, 2), (8, 16, 16, 2), (16, 32, 8, 2),
]


def step(backend, x, w, stride):
    if backend == "nchw":
        y = F.conv2d(x, w, None, stride, 1)
    elif backend == "cl":
        y = F.conv2d(x.contiguous(memory_format=torch.channels_last),
                     w.contiguous(memory_format=torch.channels_last), None, stride, 1)
    elif backend == "cl-in-nchw":
        # What a layer in an NCHW network pays for a channels-last convolution: both conversions,
        # forward and backward.
        y = F.conv2d(x.contiguous(memory_format=torch.channels_last),
                     w.contiguous(memory_format=torch.channels_last), None, stride, 1).contiguous()
    else:
        y = torch._C._nn.thnn_conv2d(x, w, [3, 3], None, [stride, stride], [1, 1])
    y.backward(torch.ones_like(y))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    backends = ["nchw", "cl", "cl-in-nchw", "im2col"]
    print(f"{'cin':>4} {'cout':>4} {'size':>4} {'s':>2}  " + "  ".join(f"{b:>14}" for b in backends))
    for cin, cout, size, stride in SHAPES:
        x = torch.randn(a.batch, cin, size, size, requires_grad=True)
        w = torch.randn(cout, cin, 3, 3, requires_grad=True)
        macs = a.batch * cout * cin * 9 * (size // stride) ** 2
        times = {b: [] for b in backends}
        for r in range(a.rounds + 1):
            for b in backends:
                t = time.perf_counter()
                step(b, x, w, stride)
                if r:
                    times[b].append(time.perf_counter() - t)
        cells = []
        for b in backends:
            med = statistics.median(times[b])
            cells.append(f"{med * 1e3:7.2f}ms {3 * macs / med / 1e9:5.1f}")
        print(f"{cin:>4} {cout:>4} {size:>4} {stride:>2}  " + "  ".join(f"{c:>14}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
