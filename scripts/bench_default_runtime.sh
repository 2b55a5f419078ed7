#!/usr/bin/env bash
# Step time of each configuration with its default runtime (`groupwise train`, no runtime flag), timed
# in interleaved rounds (config A, B, C, D, A, B, ...) so every configuration sees the same machine, and
# its ratio to end-to-end's step in the same round: the issue's "G=4 K=4 step no longer than
# end-to-end's" check. ResNet-32, batch 128, synthetic 32x32x3 data, STEPS steps per run (pipeline fill,
# the measured placement's first steps and drain included: what a user's run pays).
#
# Usage: scripts/bench_default_runtime.sh [GROUPWISE_BINARY] [ROUNDS] [STEPS]
#   CONFIGS="1:1 4:1 4:2 4:4" (K:G, the first is the baseline) and EXTRA (more train flags) from the
#   environment.
set -euo pipefail
bin=${1:-target/release/groupwise}
rounds=${2:-3}
steps=${3:-24}
configs=${CONFIGS:-1:1 4:1 4:2 4:4}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
step_time() { # K G -> seconds per step of one run
    local dir="$scratch/run"
    rm -rf "$dir"
    # shellcheck disable=SC2086
    "$bin" train --preset smoke --depth 32 --widths 16,16,32,64 --plan "$1" --groups "$2" \
        --synthetic "32,3,10,$((steps * 128)),128" --epochs 1 --no-augment --batch-size 128 \
        --eval-batch-size 128 --quiet --run-dir "$dir" ${EXTRA:-} >/dev/null
    python3 -c 'import json,sys; m=[json.loads(l) for l in open(sys.argv[1])][-1]; print(m["train_seconds"]/m["steps"])' \
        "$dir/metrics.jsonl"
}
declare -A all
for r in $(seq 1 "$rounds"); do
    for c in $configs; do
        t=$(step_time "${c%%:*}" "${c##*:}")
        all[$c]="${all[$c]:-} $t"
        echo "round $r $c: $t s/step" >&2
    done
done
base=${configs%% *}
echo "K:G    median s/step   vs ${base} (median of per-round ratios)   rounds: $rounds, $steps steps each"
for c in $configs; do
    python3 - "$c" "${all[$c]}" "${all[$base]}" <<'PY'
import statistics, sys
c, mine, base = sys.argv[1], list(map(float, sys.argv[2].split())), list(map(float, sys.argv[3].split()))
ratios = [m / b for m, b in zip(mine, base)]
print(f"{c:<6} {statistics.median(mine):>13.4f}   {statistics.median(ratios):>6.2f}x ({', '.join(f'{r:.2f}' for r in ratios)})")
PY
done
