#!/usr/bin/env bash
# What groupwise's convolution kernel (model/conv.cpp: 3x3 stride-1 layers of at most 8 output
# channels, or 16 at 32x32, on the CPU; on by default) buys over libtorch's convolutions: each
# configuration trained with GROUPWISE_CONV=libtorch and with groupwise's, interleaved, with the ratio
# own / libtorch per round (scripts/bench_ab.sh).
#
# Usage: scripts/bench_conv_kernel.sh [GROUPWISE_BINARY] [ROUNDS] [STEPS]
#   CONFIGS="1:1 4:1 4:2 4:4" (K:G) and MODES (default "sequential1 sequential default") from the
#   environment.
MODES=${MODES:-sequential1 sequential default} \
    exec "$(dirname "$0")/bench_ab.sh" GROUPWISE_CONV libtorch own "$@"
