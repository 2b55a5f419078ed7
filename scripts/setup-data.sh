#!/usr/bin/env bash
# Installs Debian's Fashion-MNIST (IDX files under /usr/share/datasets/fashion-mnist) when missing.
set -euo pipefail
dir=/usr/share/datasets/fashion-mnist
if [ -f "$dir/train-images-idx3-ubyte.gz" ]; then
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
echo "installing Debian's dataset-fashion-mnist into $dir ..."
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null
