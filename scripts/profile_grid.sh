#!/usr/bin/env bash
# Profiles ResNet-32's grid (32x32x3 images, 10 classes) for `groupwise plan --search`: K in 1, 2, 4, 8,
# 16 (balanced modules; K=1 with G=1 is end-to-end, with G > 1 the columns train through the head) x G in
# 1, 2, 4, 8, with the stop-gradient aux input and, for G > 1, the isolated one too: 35 configurations,
# one `groupwise plan --profile --json` file each in OUTDIR (the first also times the end-to-end
# reference). Minutes on 2 cores; `plan --search OUTDIR` then takes well under a second.
#
# Usage: scripts/profile_grid.sh OUTDIR [GROUPWISE_BINARY]
#   STEPS (timed steps, default 4), WARMUP (default 1), BATCH (default 128) and THREADS (intra-op
#   threads of a worker, default 1) from the environment.
set -euo pipefail
out=${1:?usage: scripts/profile_grid.sh OUTDIR [GROUPWISE_BINARY]}
bin=${2:-target/release/groupwise}
mkdir -p "$out"
model=(--preset smoke --depth 32 --widths 16,16,32,64 --in-channels 3 --image-size 32 --classes 10)
timing=(--profile --json --steps "${STEPS:-4}" --warmup "${WARMUP:-1}" --batch "${BATCH:-128}"
    --threads "${THREADS:-1}")
reference=()
n=0
for k in 1 2 4 8 16; do
    for g in 1 2 4 8; do
        auxes="stop-gradient"
        [ "$g" -gt 1 ] && auxes="stop-gradient isolated"
        for aux in $auxes; do
            n=$((n + 1))
            file="$out/k$k-g$g-$aux.json"
            echo "[$n/35] K=$k G=$g $aux -> $file" >&2
            "$bin" plan "${model[@]}" --plan "$k" --groups "$g" --aux-input "$aux" "${timing[@]}" \
                "${reference[@]}" > "$file.tmp" 2>/dev/null
            mv "$file.tmp" "$file"
            reference=(--no-reference)
        done
    done
done
