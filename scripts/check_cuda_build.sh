#!/usr/bin/env bash
# Builds the FULL CUDA extension (torch bindings included, not just the torch-free .cu files)
# against a CUDA build of torch in a separate virtual environment, imports it, and checks
# that the ops have CUDA kernels registered, that nvcc's copies of the shared constants equal
# eqkernels/ops/constants.py, and that the library embeds SASS for every arch and PTX for the
# highest one. No GPU needed. Leaves the in-tree eqkernels/_C alone (builds under a temp dir).
#   EQK_CUDA_VENV   the venv (default /tmp/eqk-venv-cuda; created if missing, reused after)
#   EQK_CUDA_TORCH  the torch to install there (default torch==2.14.1, a CUDA 13.0 build)
#   EQK_CUDA_ARCHS  as for setup.py (default "80;90")
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvcc >/dev/null 2>&1; then
  echo "NOTICE: nvcc not found; the CUDA extension was NOT built"
  exit 0
fi
VENV=${EQK_CUDA_VENV:-/tmp/eqk-venv-cuda}
TORCH_SPEC=${EQK_CUDA_TORCH:-torch==2.14.1}
if ! "$VENV/bin/python" -c "import torch, ninja, pybind11; assert torch.version.cuda" 2>/dev/null; then
  echo "creating $VENV with $TORCH_SPEC"
  python -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "$TORCH_SPEC" ninja pybind11 setuptools wheel numpy
fi
PY="$VENV/bin/python"
# The toolkit behind nvcc (nvcc may be a wrapper script), and the cuBLAS/cuSPARSE headers
# torch's CUDA headers include, which come with the torch wheel's nvidia packages.
NVCC_REAL=$(sed -n 's/^exec \([^ ]*nvcc\).*/\1/p' "$(command -v nvcc)" 2>/dev/null || true)
NVCC_REAL=${NVCC_REAL:-$(readlink -f "$(command -v nvcc)")}
export CUDA_HOME=${CUDA_HOME:-$(dirname "$(dirname "$NVCC_REAL")")}
NV_INC=$("$PY" -c "import os, nvidia; print(os.path.join(list(nvidia.__path__)[0], 'cu13', 'include'))")
export CPATH="$NV_INC${CPATH:+:$CPATH}"
out=${EQK_CUDA_BUILD_DIR:-$(mktemp -d)}
echo "torch $("$PY" -c 'import torch; print(torch.__version__)'), CUDA_HOME=$CUDA_HOME, archs ${EQK_CUDA_ARCHS:-80;90}"
t0=$(date +%s)
EQK_FORCE_CUDA=1 EQK_NO_NATIVE=1 MAX_JOBS=${MAX_JOBS:-2} "$PY" setup.py -q build_ext \
  --build-temp "$out/temp" --build-lib "$out/lib"
echo "built in $(( $(date +%s) - t0 )) s"
so=$(ls "$out"/lib/eqkernels/_C*.so)
"$PY" scripts/check_cuda_build.py "$so"
CUOBJDUMP=$(command -v cuobjdump || "$PY" -c "import os, triton; print(os.path.join(os.path.dirname(triton.__file__), 'backends/nvidia/bin/cuobjdump'))" 2>/dev/null || python -c "import os, triton; print(os.path.join(os.path.dirname(triton.__file__), 'backends/nvidia/bin/cuobjdump'))")
if [ -x "$CUOBJDUMP" ]; then
  elf=$("$CUOBJDUMP" --list-elf "$so" | grep -o 'sm_[0-9]*' | sort -u | tr '\n' ' ')
  ptx=$("$CUOBJDUMP" --list-ptx "$so" | grep -o 'sm_[0-9]*' | sort -u | tr '\n' ' ')
  echo "embedded SASS: $elf  PTX: $ptx"
  IFS=';' read -ra archs <<< "${EQK_CUDA_ARCHS:-80;90}"
  for a in "${archs[@]}"; do [[ " $elf " == *" sm_$a "* ]] || { echo "FAIL: no SASS for sm_$a"; exit 1; }; done
  top=$(printf '%s\n' "${archs[@]}" | sort -n | tail -1)
  [[ " $ptx " == *" sm_$top "* ]] || { echo "FAIL: no PTX for sm_$top (newer GPUs would get 'no kernel image')"; exit 1; }
else
  echo "NOTICE: cuobjdump not found; embedded arches not listed"
fi
[ -n "${EQK_CUDA_BUILD_DIR:-}" ] || rm -rf "$out"
echo "CUDA extension: build + import ok"
