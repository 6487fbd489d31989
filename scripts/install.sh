#!/usr/bin/env bash
# Create ./.venv with everything the engine, its tests and benchmarks need (idempotent).
# torch is pinned to the 2.14.1 / torchvision 0.29.1 pair: an unpinned torch pulls a multi-GB
# CUDA build, and torch 2.13.0 does not load beside PyPI's torchvision (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! .venv/bin/python -c "import torch, torchvision, sys; sys.exit(0 if torch.__version__.startswith('2.14.1') else 1)" 2>/dev/null; then
  .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
fi
.venv/bin/python -m pip install -q -e ".[torch,onnx,export,parquet,eval,test,serve,ray,triton,openvino]"
