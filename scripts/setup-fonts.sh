#!/usr/bin/env bash
# Installs Debian's fonts-dejavu-core when missing: `groupwise report` draws its plots' text with
# DejaVu Sans (or any TrueType file passed with --font).
set -euo pipefail
if [ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
echo "installing Debian's fonts-dejavu-core ..."
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq fonts-dejavu-core >/dev/null
