#!/usr/bin/env bash
# Install styleface and everything it needs into ./.venv. Safe to run again (it only adds what is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade "pip>=23"
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    .venv/bin/python -m pip install -q --disable-pip-version-check "torch>=2.3,<2.15"
  else
    # No GPU: take the CPU build. A bare 'torch' requirement would resolve to a multi-GB CUDA build.
    .venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0"
  fi
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"
