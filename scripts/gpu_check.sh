#!/usr/bin/env bash
# One call on a GPU machine: build with CUDA (forced on), run every test with CUDA tests failing instead of
# skipping, run the C++ tests with CUDA, run the CUDA benchmarks (benchmarks/run_all.py), and leave the
# results in OUT_DIR.
# Usage: bash scripts/gpu_check.sh OUT_DIR      (PYTHON=python3.12 to pick the interpreter)
#   KVQ_GPU_STEPS="build test ctest bench" (the default; "profile" adds the per-kernel time of one
#   KohonenVQ forward, benchmarks/profile_forward.py; "sanitize", after ctest, runs compute-sanitizer's
#   memcheck, racecheck and synccheck on the C++ tests) picks steps, so one device call can stay within its
#   10 minutes: a later call on the still-warm machine reuses the build. KVQ_PYTEST_ARGS (default "tests")
#   narrows the test run, e.g. "-m cuda tests". On an H100 (16 cores) the build takes ~100 s, the whole test suite
#   ~340 s, ctest ~30 s and the benchmarks ~90 s: within one 10-minute device call, run "build test" in one call
#   and "build ctest sanitize bench" in the next (the build is incremental while the machine is still warm).
#   Quicker first call (session 3: 185 s in all): KVQ_GPU_STEPS="build test profile" KVQ_PYTEST_ARGS="-m cuda -q tests".
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
# The machine's python3 already lives in a venv (torch, cmake, ninja, pytest, scikit-build-core): use it as
# is, since a venv made from a venv does not see its packages. Otherwise a venv over the system packages.
if "$python" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)'; then
  py=$python
else
  [ -x "$venv/bin/python" ] || "$python" -m venv --system-site-packages "$venv"
  py="$venv/bin/python"
fi
if compgen -G ".whl/*.whl" > /dev/null; then
  run "$py" -m pip install -q --no-index --no-deps .whl/*.whl
fi

steps=" ${KVQ_GPU_STEPS:-build test ctest bench} "
want() { [[ "$steps" == *" $1 "* ]]; }

if want build; then
step "build (KVQ_CUDA=ON)"
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-16}
run env KVQ_CUDA=ON "$py" -m pip install --no-build-isolation -e . || exit 1
fi
"$py" -m kohonen_vq info | tee "$out/build_info.json" | tee -a "$log"

if want test; then
step "pytest (CUDA tests required)"
# shellcheck disable=SC2086  # the arguments are meant to split
run env KOHONEN_VQ_REQUIRE_CUDA=1 "$py" -m pytest -q -rs --durations=15 ${KVQ_PYTEST_ARGS:-tests}
fi

if want ctest; then
step "ctest (with CUDA)"
run env KVQ_CUDA=ON PYTHON="$py" bash scripts/run_ctest.sh build/ctest-cuda
fi

if want sanitize; then
step "compute-sanitizer: memcheck, racecheck, synccheck on the C++ tests (built by the ctest step)"
# What tests/cpp/cuda_sim cannot see on the CPU: shared-memory races and the device's own memory checks.
sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
for tool in memcheck racecheck synccheck; do
  run "$sanitizer" --tool "$tool" --error-exitcode 1 build/ctest-cuda/tests/cpp/kvq_test_ops
done
fi

if want profile; then
step "profile: where a KohonenVQ training forward spends its time (exact, then tf32)"
for precision in exact tf32; do run "$py" benchmarks/profile_forward.py --device cuda --precision "$precision"; done
fi

if want bench; then
step "benchmarks"
# CUDA only: the CPU suite is run by hand on the CPU machines (minutes), GPU machine time is for GPU figures.
run "$py" benchmarks/run_all.py --device cuda --out "$out/benchmarks"
fi

step "done: status $status"
exit "$status"
