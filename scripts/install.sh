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
.venv/bin/python -m pip install -q -e ".[torch,onnx,export,parquet,eval,fused,report,test,serve,ray,triton,openvino]"
# Headless Chromium for the report's browser test (Debian package; Playwright drives it, never downloads one).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) \
      >/dev/null || echo "install.sh: could not install chromium; the browser test will fail under CI" >&2
  else
    echo "install.sh: chromium not found (apt-get install chromium as root); the browser test needs it" >&2
  fi
fi
# the native part (libsemgir, semgir-score, ctest suite): Debian -dev packages, ORT headers, cmake
bash scripts/build_native.sh
