#!/usr/bin/env bash
# One call on a GPU machine: build with CUDA (forced on), run every test with CUDA tests failing instead of
# skipping, run the C++ tests with CUDA, run the CUDA benchmarks (benchmarks/run_all.py), and leave the
# results in OUT_DIR.
# Usage: bash scripts/gpu_check.sh OUT_DIR      (PYTHON=python3.12 to pick the interpreter)
# Packages missing on the machine can travel as wheels in .whl/ (see the device notes in the README).
# Output stays within 8 files (the device tool returns at most 8): the log, build_info.json and the benchmark
# JSON/Markdown files.
set -uo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-gpu-results}")
mkdir -p "$out"
log="$out/gpu-check.log"
python=${PYTHON:-python3}
venv=${KVQ_GPU_VENV:-/tmp/kvq-gpu-venv}
status=0
step() { echo "== $*" | tee -a "$log"; }
run() { "$@" 2>&1 | tee -a "$log"; local rc=${PIPESTATUS[0]}; [ "$rc" -eq 0 ] || { echo "!! failed ($rc): $*" | tee -a "$log"; status=1; }; return "$rc"; }

step "machine"
run nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
# A venv over the system packages (torch, cmake, ninja, pytest are there); wheels from .whl fill the gaps.
[ -x "$venv/bin/python" ] || "$python" -m venv --system-site-packages "$venv"
py="$venv/bin/python"
if compgen -G ".whl/*.whl" > /dev/null; then
  run "$py" -m pip install -q --no-index --no-deps .whl/*.whl
fi

step "build (KVQ_CUDA=ON)"
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-16}
run env KVQ_CUDA=ON "$py" -m pip install --no-build-isolation -e . || exit 1
"$py" -m kohonen_vq info | tee "$out/build_info.json" | tee -a "$log"

step "pytest (CUDA tests required)"
run env KOHONEN_VQ_REQUIRE_CUDA=1 "$py" -m pytest -q -rs tests

step "ctest (with CUDA)"
run env KVQ_CUDA=ON PYTHON="$py" bash scripts/run_ctest.sh build/ctest-cuda

step "benchmarks"
# CUDA only: the CPU suite is run by hand on the CPU machines (minutes), GPU machine time is for GPU figures.
run "$py" benchmarks/run_all.py --device cuda --out "$out/benchmarks"

step "done: status $status"
exit "$status"
