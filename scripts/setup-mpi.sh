#!/usr/bin/env bash
# Installs what `--features mpi` needs when missing: an MPI library with its launcher (Debian's OpenMPI;
# MPICH works too) and libclang for rsmpi's bindgen.
set -euo pipefail
if command -v mpicc >/dev/null && command -v mpiexec >/dev/null \
  && ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1; then
  exit 0
fi
"$(dirname "$0")/apt-install.sh" "OpenMPI and libclang for the mpi feature" openmpi-bin libopenmpi-dev libclang-dev
