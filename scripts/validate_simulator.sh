#!/usr/bin/env bash
# The simulator against real runs on this machine: `groupwise bench --parallel` on the six validation
# configurations (end-to-end, DGL K=2 and K=4, G=2 K=2 and K=4, G=4 K=4) with 2 workers (threads, and
# MPI over shared memory), 2 workers with MPI over TCP on the loopback, and 1 worker; each prints the
# simulator's prediction beside the measured step time and the error, the medians over ROUNDS rounds
# (each with its own profile; configurations interleaved). About 6 minutes per invocation and round
# on 2 cores.
#
# Usage: scripts/validate_simulator.sh [GROUPWISE_BINARY] [STEPS] [ROUNDS]
#   (built with --features mpi and mpiexec on PATH for the MPI rows)
set -euo pipefail
bin=${1:-target/release/groupwise}
steps=${2:-8}
rounds=${3:-3}
configs=1:1,2:1,4:1,2:2,4:2,4:4
run() { # label, extra flags
    echo "== $1" >&2
    "$bin" bench --parallel --configs "$configs" --steps "$steps" --warmup 2 --rounds "$rounds" "${@:2}" |
        sed -n '/^predicted/,/^$/p'
}
run "2 workers, MPI over shared memory" --worker-threads 2
run "2 workers, MPI over TCP" --worker-threads 2 --mpi-tcp
run "1 worker" --worker-threads 1
