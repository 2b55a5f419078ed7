#!/usr/bin/env bash
# Installs Debian's Fashion-MNIST (IDX files under /usr/share/datasets/fashion-mnist) when missing.
set -euo pipefail
dir=/usr/share/datasets/fashion-mnist
if [ -f "$dir/train-images-idx3-ubyte.gz" ]; then
  exit 0
fi
"$(dirname "$0")/apt-install.sh" "Debian's Fashion-MNIST into $dir" dataset-fashion-mnist
