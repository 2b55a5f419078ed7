#!/usr/bin/env bash
# What keeping freed memory for reuse (device::keep_freed_memory, on by default) buys: each
# configuration trained with glibc's own allocator settings (GROUPWISE_MALLOC=system) and with
# groupwise's, interleaved, with the ratio kept / system per round (scripts/bench_ab.sh).
#
# Usage: scripts/bench_malloc.sh [GROUPWISE_BINARY] [ROUNDS] [STEPS]
#   CONFIGS="1:1 4:1 4:2 4:4" (K:G) and MODES ("sequential threads") from the environment.
exec "$(dirname "$0")/bench_ab.sh" GROUPWISE_MALLOC system kept "$@"
