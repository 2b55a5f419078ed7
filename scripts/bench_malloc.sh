#!/usr/bin/env bash
# What keeping freed memory for reuse (device::keep_freed_memory, on by default) buys: each
# configuration trained with glibc's own allocator settings (GROUPWISE_MALLOC=system) and with
# groupwise's, interleaved (system, kept, system, kept, ...) so both see the same machine; prints the
# seconds per step, the process's kernel (sys) seconds, and per round the ratio kept / system.
# ResNet-32, batch 128, synthetic 32x32x3 data, STEPS steps per run, one epoch.
#
# Usage: scripts/bench_malloc.sh [GROUPWISE_BINARY] [ROUNDS] [STEPS]
#   CONFIGS="1:1 4:1 4:2 4:4" (K:G) and MODES ("sequential threads": --workers sequential --threads 2,
#   --workers threads --worker-threads 2) from the environment.
set -euo pipefail
bin=${1:-target/release/groupwise}
rounds=${2:-2}
steps=${3:-20}
configs=${CONFIGS:-1:1 4:1 4:2 4:4}
modes=${MODES:-sequential threads}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
run() { # K G MODE MALLOC -> "seconds_per_step sys_seconds"
    local dir="$scratch/run" flags
    rm -rf "$dir"
    case $3 in
        sequential) flags="--workers sequential --threads 2" ;;
        threads) flags="--workers threads --worker-threads 2" ;;
        *) echo "unknown mode $3" >&2; exit 2 ;;
    esac
    # shellcheck disable=SC2086
    GROUPWISE_MALLOC=$4 /usr/bin/time -f "%S" -o "$scratch/time" \
        "$bin" train --preset smoke --depth 32 --widths 16,16,32,64 --plan "$1" --groups "$2" \
        --synthetic "32,3,10,$((steps * 128)),128" --epochs 1 --no-augment --batch-size 128 \
        --eval-batch-size 128 --quiet --run-dir "$dir" $flags >/dev/null 2>&1
    python3 -c 'import json,sys; m=[json.loads(l) for l in open(sys.argv[1])][-1]; print(m["train_seconds"]/m["steps"], end=" ")' \
        "$dir/metrics.jsonl"
    cat "$scratch/time"
}
echo "K:G   mode        round  system s/step (sys s)  kept s/step (sys s)  kept/system"
for r in $(seq 1 "$rounds"); do
    for c in $configs; do
        for m in $modes; do
            read -r s_step s_sys < <(run "${c%%:*}" "${c##*:}" "$m" system)
            read -r k_step k_sys < <(run "${c%%:*}" "${c##*:}" "$m" kept)
            python3 -c 'import sys; c,m,r,a,b,x,y=sys.argv[1:]; print(f"{c:<5} {m:<11} {r:>5}  {float(a):>8.4f} ({float(b):>5.2f})      {float(x):>8.4f} ({float(y):>5.2f})    {float(x)/float(a):>6.3f}")' \
                "$c" "$m" "$r" "$s_step" "$s_sys" "$k_step" "$k_sys"
        done
    done
done
