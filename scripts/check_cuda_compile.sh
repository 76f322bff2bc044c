#!/usr/bin/env bash
# Compile-checks every csrc/**/*.cu for sm_80 and sm_90 with nvcc. The .cu files are
# torch-free, so this needs only the CUDA toolkit. Skipped, with a notice, without nvcc.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvcc >/dev/null 2>&1; then
  echo "NOTICE: nvcc not found; CUDA sources were NOT compile-checked"
  exit 0
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
mapfile -t sources < <(find csrc -name '*.cu' | sort)
for arch in 80 90; do
  for src in "${sources[@]}"; do
    nvcc -std=c++17 -O3 -Icsrc -arch=sm_${arch} -Werror all-warnings -c "$src" \
      -o "$out/$(basename "$src").sm_${arch}.o"
    echo "nvcc sm_${arch}: ok  $src"
  done
done
echo "compile-checked ${#sources[@]} CUDA source(s) for sm_80 and sm_90"
