#!/usr/bin/env bash
# Installs Debian's fonts-dejavu-core when missing: `groupwise report` draws its plots' text with
# DejaVu Sans (or any TrueType file passed with --font).
set -euo pipefail
if [ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
  exit 0
fi
"$(dirname "$0")/apt-install.sh" "DejaVu Sans for the report plots" fonts-dejavu-core
