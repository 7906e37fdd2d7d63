#!/usr/bin/env bash
# Create .venv (if needed) and install Corral with everything the demo and the tests use.
# With --distributed, also what the distributed toolkits' tests and examples run: PyTorch (the
# CPU build), mpi4py and OpenMPI (apt-get, as root). Sourced by demo.sh and test.sh; safe to run again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
quiet_pip() { .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
extras=dev
if [ "${1:-}" = "--distributed" ]; then
  extras=dev,distributed
  if ! command -v mpirun >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "installing OpenMPI (apt-get)" >&2
      apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openmpi-bin libopenmpi-dev >/dev/null
    else
      echo "OpenMPI's mpirun is missing and cannot be installed here: the MPI tests are skipped" >&2
    fi
  fi
  # The CPU build first (a plain `torch` would pull a multi-GB CUDA build); the extra's range accepts it.
  .venv/bin/python -c "import torch" 2>/dev/null || quiet_pip "torch==2.13.0"
fi
quiet_pip -e ".[$extras]"
.venv/bin/python -c "import corral, fastapi, sqlalchemy, sklearn, cryptography" >/dev/null

# Azurite, a real Azure Blob Storage server for the volume tests (tests/data_stores.py), from npm into .tools/.
if [ ! -x .tools/node_modules/.bin/azurite-blob ]; then
  if ! command -v npm >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Node.js and npm (apt-get) for Azurite" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  fi
  if command -v npm >/dev/null; then
    npm install --silent --no-audit --no-fund --prefix .tools azurite@3 >/dev/null 2>&1 \
      || echo "Azurite could not be installed: the Azure Blob volume tests are skipped" >&2
  else
    echo "npm is missing: the Azure Blob volume tests are skipped" >&2
  fi
fi

# Chromium (Debian's), which the portal's browser tests drive with Playwright (never a browser Playwright downloads).
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Chromium (apt-get) for the portal's browser tests" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
      || echo "Chromium could not be installed: the portal's browser tests are skipped" >&2
  else
    echo "chromium is missing: the portal's browser tests are skipped" >&2
  fi
fi

# rclone and fuse3, for volumes mounted with FUSE (mode: mount) and their test.
if ! command -v rclone >/dev/null || ! command -v fusermount3 >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing rclone and fuse3 (apt-get)" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rclone fuse3 >/dev/null \
      || echo "rclone and fuse3 could not be installed: the FUSE mount test is skipped" >&2
  else
    echo "rclone or fuse3 is missing: the FUSE mount test is skipped" >&2
  fi
fi
