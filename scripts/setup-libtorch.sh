#!/usr/bin/env bash
# Installs libtorch 2.11.0 (the build tch 0.24.0 is made for) from PyPI into a cache outside the clone, and
# links it into the clone as `.libtorch`, where .cargo/config.toml points torch-sys.
#
# The lean route: only the torch wheel plus the two CUDA runtime wheels libtorch_cpu.so itself links
# (libcudart, libcupti), about 0.54 GB instead of the ~3 GB `pip install torch` pulls. Enough for CPU.
# With GROUPWISE_TORCH=full the whole `pip install torch==2.11.0` set is installed instead (cuDNN, cuBLAS,
# NCCL...), which `--device cuda` needs on a GPU machine.
#
# Reused when present; created when not. The cache lives in $GROUPWISE_CACHE (default
# ${XDG_CACHE_HOME:-$HOME/.cache}/groupwise).
set -euo pipefail

TORCH_VERSION=2.11.0
CUDART="nvidia-cuda-runtime==13.0.96.*"
CUPTI="nvidia-cuda-cupti==13.0.85.*"
flavour=${GROUPWISE_TORCH:-lean}
case "$flavour" in lean|full) ;; *) echo "GROUPWISE_TORCH must be 'lean' or 'full', not '$flavour'" >&2; exit 2;; esac

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${GROUPWISE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/groupwise}
dest="$cache/libtorch-$TORCH_VERSION-$flavour"
python=${PYTHON:-python3}

if [ -f "$dest/.complete" ]; then
  echo "libtorch $TORCH_VERSION ($flavour) already in $dest"
else
  command -v "$python" >/dev/null || { echo "setup-libtorch: $python not found (needed to fetch the wheels)" >&2; exit 1; }
  echo "installing libtorch $TORCH_VERSION ($flavour) into $dest ..."
  rm -rf "$dest.tmp"
  mkdir -p "$dest.tmp"
  if [ "$flavour" = lean ]; then
    "$python" -m pip download --quiet --no-deps -d "$dest.tmp/wheels" \
      "torch==$TORCH_VERSION" "$CUDART" "$CUPTI"
    "$python" - "$dest.tmp" <<'PY'
import pathlib, sys, zipfile
root = pathlib.Path(sys.argv[1])
for wheel in sorted((root / "wheels").glob("*.whl")):
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            # Keep the libraries and headers; skip the Python sources of the torch package.
            top = info.filename.split("/")[0]
            if top in ("torch", "nvidia"):
                z.extract(info, root)
PY
    rm -rf "$dest.tmp/wheels"
  else
    "$python" -m pip install --quiet --target "$dest.tmp" "torch==$TORCH_VERSION"
  fi
  # Wheels do not keep the executable bit of shared objects everywhere; the loader does not need it,
  # but keep the tree readable for every user.
  chmod -R a+rX "$dest.tmp"
  touch "$dest.tmp/.complete"
  rm -rf "$dest"
  mv "$dest.tmp" "$dest"
  echo "libtorch installed in $dest"
fi

ln -sfn "$dest" "$repo/.libtorch"
