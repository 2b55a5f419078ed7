#!/usr/bin/env bash
# Two settings of one environment variable against each other: every configuration trained with
# VAR=A and with VAR=B, interleaved (A, B, A, B, ...) so both see the same machine; prints seconds
# per step, the process's kernel (sys) seconds, and per round the ratio B / A. ResNet-32, batch 128,
# synthetic 32x32x3 data, STEPS steps per run, one epoch (`groupwise train`).
#
# Usage: scripts/bench_ab.sh VAR A B [GROUPWISE_BINARY] [ROUNDS] [STEPS]
#   CONFIGS="1:1 4:1 4:2 4:4" (K:G) and MODES from the environment, any of: sequential (--workers
#   sequential --threads 2), sequential1 (the same on one thread), threads (--worker-threads 2),
#   default (train's default runtime); default MODES="sequential threads".
set -euo pipefail
var=${1:?usage: scripts/bench_ab.sh VAR A B [GROUPWISE_BINARY] [ROUNDS] [STEPS]}
a=${2:?value A}
b=${3:?value B}
bin=${4:-target/release/groupwise}
rounds=${5:-2}
steps=${6:-20}
configs=${CONFIGS:-1:1 4:1 4:2 4:4}
modes=${MODES:-sequential threads}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
run() { # K G MODE VALUE -> "seconds_per_step sys_seconds"
    local dir="$scratch/run" flags
    rm -rf "$dir"
    case $3 in
        sequential) flags="--workers sequential --threads 2" ;;
        sequential1) flags="--workers sequential --threads 1" ;;
        threads) flags="--workers threads --worker-threads 2" ;;
        default) flags="" ;;
        *) echo "unknown mode $3" >&2; exit 2 ;;
    esac
    # shellcheck disable=SC2086
    env "$var=$4" /usr/bin/time -f "%S" -o "$scratch/time" \
        "$bin" train --preset smoke --depth 32 --widths 16,16,32,64 --plan "$1" --groups "$2" \
        --synthetic "32,3,10,$((steps * 128)),128" --epochs 1 --no-augment --batch-size 128 \
        --eval-batch-size 128 --quiet --run-dir "$dir" $flags >/dev/null 2>&1
    python3 -c 'import json,sys; m=[json.loads(l) for l in open(sys.argv[1])][-1]; print(m["train_seconds"]/m["steps"], end=" ")' \
        "$dir/metrics.jsonl"
    cat "$scratch/time"
}
printf '%-5s %-11s %5s  %-22s %-22s %s\n' "K:G" mode round "$var=$a s/step (sys s)" \
    "$var=$b s/step (sys s)" "$b/$a"
for r in $(seq 1 "$rounds"); do
    for c in $configs; do
        for m in $modes; do
            read -r a_step a_sys < <(run "${c%%:*}" "${c##*:}" "$m" "$a")
            read -r b_step b_sys < <(run "${c%%:*}" "${c##*:}" "$m" "$b")
            python3 -c 'import sys; c,m,r,a,b,x,y=sys.argv[1:]; print(f"{c:<5} {m:<11} {r:>5}  {float(a):>8.4f} ({float(b):>5.2f})        {float(x):>8.4f} ({float(y):>5.2f})        {float(x)/float(a):>6.3f}")' \
                "$c" "$m" "$r" "$a_step" "$a_sys" "$b_step" "$b_sys"
        done
    done
done
