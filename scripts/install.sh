#!/usr/bin/env bash
# Installs eqkernels and what it needs on a fresh machine, building the compiled
# extension in place (editable). A torch already installed is kept; otherwise the
# pinned CPU build is installed first, so the build compiles against it.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="python -m pip install --quiet --disable-pip-version-check"
python -c "import torch" 2>/dev/null || $PIP torch==2.13.0
$PIP numpy tqdm ninja pybind11 pytest matplotlib setuptools wheel
# scipy: the HiGHS LP solver that labels the LP domain's generated programs (python/domains).
# scikit-learn: its bundled digits data set (benchmarks/bench_digits_deq.py).
$PIP scipy scikit-learn
# Triton: the GPU kernels, and their interpreter-mode tests on CPU. torchdeq: the
# benchmark baseline; --no-deps so it cannot replace the installed torch.
$PIP triton || echo "eqkernels: triton not installable here; the Triton backend will be unavailable"
$PIP --no-deps torchdeq
$PIP --no-build-isolation -e .
python -c "import eqkernels, pprint; pprint.pprint(eqkernels.backends())"
