#!/usr/bin/env bash
# What groupwise's batch norm kernel (model/batch_norm.cpp, on by default for training on the CPU)
# buys over libtorch's: each configuration trained with GROUPWISE_BATCH_NORM=libtorch and with
# groupwise's, interleaved, with the ratio own / libtorch per round (scripts/bench_ab.sh).
#
# Usage: scripts/bench_batch_norm.sh [GROUPWISE_BINARY] [ROUNDS] [STEPS]
#   CONFIGS="1:1 4:1 4:2 4:4" (K:G) and MODES (default "sequential1 sequential default") from the
#   environment.
MODES=${MODES:-sequential1 sequential default} \
    exec "$(dirname "$0")/bench_ab.sh" GROUPWISE_BATCH_NORM libtorch own "$@"
