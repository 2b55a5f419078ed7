#!/usr/bin/env bash
# apt-install.sh WHAT PACKAGE...: installs Debian packages (with sudo when not root), saying what for.
# The setup-*.sh scripts call it once they have found something missing.
set -euo pipefail
what=$1
shift
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
echo "installing $what ($*) ..."
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
