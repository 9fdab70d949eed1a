#!/usr/bin/env bash
# Configures, builds (ninja, CMAKE_BUILD_PARALLEL_LEVEL jobs, default 2) and runs the LibTorch C++ tests (tests/cpp) with ctest.
# Usage: scripts/run_ctest.sh [BUILD_DIR]        default BUILD_DIR: build/ctest in the repository
# Environment: PYTHON  interpreter with torch (default: the repository's .venv/bin/python)
#              KVQ_CUDA AUTO (default), ON or OFF: whether to build the CUDA kernels
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build/ctest}"
python="${PYTHON:-$root/.venv/bin/python}"
# The project needs CMake >= 3.26; the venv's cmake/ninja (pip packages) are preferred over older system ones.
PATH="$(dirname "$python"):$PATH"

cmake -S "$root" -B "$build" -G Ninja \
  -DKVQ_BUILD_TESTS=ON \
  -DKVQ_CUDA="${KVQ_CUDA:-AUTO}" \
  -DPython3_EXECUTABLE="$python"
cmake --build "$build" -j"${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
ctest --test-dir "$build" --output-on-failure
