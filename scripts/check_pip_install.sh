#!/usr/bin/env bash
# What a new user gets from the standard install: a fresh venv where torch is already
# installed (it sees this machine's torch through --system-site-packages: no multi-GB
# download), a clean clone of the committed tree (no in-tree build), and plain
# `pip install .` under pip's build isolation. Then, outside the clone, eqkernels must be the
# venv's copy, report its compiled backend, name the torch it was built against (the one it
# runs with), and answer a bad op argument with ValueError. Removes the venv and clone.
#   EQK_PIP_ARGS   extra pip arguments (e.g. --no-build-isolation)
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone --quiet . "$work/src"
python -m venv --system-site-packages "$work/venv"
t0=$(date +%s)
# -g0: no debug info (Python's CFLAGS add -g), about half the compile time on CI's 2 cores;
# the library links and behaves the same.
# shellcheck disable=SC2086
CFLAGS="${CFLAGS:-} -g0" "$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check ${EQK_PIP_ARGS:-} \
  "$work/src"
echo "pip install . took $(( $(date +%s) - t0 )) s"
cd "$work"
"$work/venv/bin/python" - "$work/venv" "$work/src/tests" <<'PY'
import json, pathlib, sys

import torch

import eqkernels

here = pathlib.Path(eqkernels.__file__).resolve()
assert str(here).startswith(str(pathlib.Path(sys.argv[1]).resolve())), f"not the venv's: {here}"
ok, reason = eqkernels.backends()["cpp"]
assert ok, f"compiled backend missing: {reason}"
built = json.loads(here.with_name("_C_build.json").read_text())
assert built["torch"] == torch.__version__, (built, torch.__version__)
sys.path.insert(0, sys.argv[2])
from ops_cases import anderson_args  # noqa: E402

args = list(anderson_args(4, 6, 3, torch.float32, 1))
args[7] = torch.zeros(1)  # abs_res of the wrong shape: a ValueError, not a crash
try:
    torch.ops.eqk.anderson_step(*args)
    raise SystemExit("a wrong-shape abs_res was accepted")
except ValueError:
    pass
print(f"ok: {here.parent}: {reason}, built against torch {built['torch']}; a bad argument "
      f"raised ValueError")
PY
