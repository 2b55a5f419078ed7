#!/usr/bin/env bash
# The simulator against `groupwise train`'s default runtime on this machine: a worker thread per node,
# more threads than cores, which the kernel's scheduler shares out. For each validation configuration
# (end-to-end, DGL K=2 and K=4, G=2 K=2 and K=4, G=4 K=4): one profile (`plan --profile`, the nodes
# under the load of as many busy workers as there are cores; end-to-end, one node, on all the cores),
# one default-runtime run of STEPS steps (ResNet-32, batch 128, synthetic 32x32x3), then `plan
# --simulate PROFILE --trace RUN` (the run's placement, its depth and epoch, the workers sharing this
# machine's cores), printing measured vs simulated step over the whole epoch and its last steps.
# ROUNDS rounds (configurations interleaved, each round with its own profiles and runs), then per
# configuration the medians over the rounds (a machine whose speed drifts moves a profile and its run apart).
# About 2 minutes per round on 2 cores.
#
# Usage: scripts/validate_default_runtime.sh [GROUPWISE_BINARY] [STEPS] [ROUNDS]
set -euo pipefail
bin=${1:-target/release/groupwise}
steps=${2:-16}
rounds=${3:-3}
cores=$(nproc)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
model=(--depth 32 --widths 16,16,32,64 --in-channels 3 --image-size 32 --classes 10)
printf '%-5s %5s %13s %13s %7s %13s %13s %7s\n' "K:G" "round" "epoch: run ms" "simulated" "error" \
    "last: run ms" "simulated" "error"
for r in $(seq 1 "$rounds"); do
    for c in 1:1 2:1 4:1 2:2 4:2 4:4; do
        k=${c%%:*} g=${c##*:}
        load=(--copies "$cores" --threads 1)
        [ "$c" = 1:1 ] && load=(--copies 1 --threads "$cores")
        "$bin" plan "${model[@]}" --plan "$k" --groups "$g" --profile --json --no-reference \
            --steps 6 --warmup 2 "${load[@]}" > "$scratch/profile.json" 2>/dev/null
        rm -rf "$scratch/run"
        "$bin" train --preset smoke --depth 32 --widths 16,16,32,64 --plan "$k" --groups "$g" \
            --synthetic "32,3,10,$((steps * 128)),128" --epochs 1 --no-augment --batch-size 128 \
            --eval-batch-size 128 --quiet --run-dir "$scratch/run" >/dev/null 2>&1
        "$bin" plan "${model[@]}" --plan "$k" --groups "$g" --simulate "$scratch/profile.json" \
            --trace "$scratch/run" | python3 -c '
import re, sys
text = sys.stdin.read()
def pair(label):
    m = re.search(label + r"[^\n]*?: ([0-9.]+) ms per step measured, ([0-9.]+) ms simulated \(([-+0-9.]+)%\)", text)
    return m.groups() if m else ("-", "-", "-")
e, l = pair("the whole epoch"), pair("the last steps of the epoch")
print(f"{sys.argv[1]:<5} {sys.argv[2]:>5} {e[0]:>13} {e[1]:>13} {e[2]:>6}% {l[0]:>13} {l[1]:>13} {l[2]:>6}%")
' "$c" "$r" | tee -a "$scratch/rows"
    done
done
# Per configuration: the medians over the rounds (errors: the median of the rounds' own).
python3 - "$scratch/rows" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    cells = line.split()
    if "-" in cells[2:]:
        continue
    rows.setdefault(cells[0], []).append([float(x.rstrip("%")) for x in cells[2:]])
print(f"{'K:G':<5} {'rounds':>6} {'epoch: run ms':>13} {'simulated':>13} {'error':>7} "
      f"{'last: run ms':>13} {'simulated':>13} {'error':>7}  (medians)")
for c, v in rows.items():
    m = [statistics.median(col) for col in zip(*v)]
    print(f"{c:<5} {len(v):>6} {m[0]:>13.1f} {m[1]:>13.1f} {m[2]:>+6.1f}% {m[3]:>13.1f} {m[4]:>13.1f} {m[5]:>+6.1f}%")
PY
