# Developer entry points. `make demo` and `make test` work on a fresh machine: they create .venv,
# install torch and the build tools, build the native library (with CUDA kernels when nvcc exists) and run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch is pinned to the wheels on this kind of machine's local disk; any torch >= 2.6 works.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
BUILD_DEPS := scikit-build-core cmake ninja numpy pytest hypothesis expecttest scikit-image tqdm tensorboard matplotlib nbclient nbformat ipykernel

.PHONY: setup build demo test pytest ctest bench experiments notebooks clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

setup: $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q $(BUILD_DEPS)
	$(MAKE) build

# Incremental: scikit-build-core reuses build/<wheel tag>. KVQ_CUDA=AUTO|ON|OFF selects the CUDA kernels.
build: $(PY)
	$(PIP) install --no-build-isolation -e . -q
	$(PY) -c "import json, kohonen_vq; print('kohonen_vq built:', json.dumps(kohonen_vq.build_info()))"

demo: setup
	$(PY) -m kohonen_vq demo

test: setup
	$(MAKE) pytest ctest

pytest:
	$(PY) -m pytest -q tests

# The C++ (LibTorch) tests build the library once more in build/ctest; CPU only unless KVQ_CUDA_CTEST=ON.
ctest:
	KVQ_CUDA=$${KVQ_CUDA_CTEST:-OFF} PYTHON=$(abspath $(PY)) bash scripts/run_ctest.sh build/ctest

bench:
	$(PY) benchmarks/run_all.py

# The paper's tables and figures on the built-in data (56 CPU runs, ~15-30 min on 2 cores; finished runs are
# reused): writes experiments/RESULTS.md, experiments/tables/ and experiments/figures/.
experiments: setup
	$(PY) -m kohonen_vq.experiments all --seeds 2 --steps 500 --batch-size 32 --jobs 2 --out runs/experiments \
	  --report experiments -- --hidden 32 --res-channels 16 --embedding-dim 16

notebooks: setup
	$(PIP) install -q jupyterlab
	$(VENV)/bin/jupyter lab notebooks

clean:
	rm -rf build dist *.egg-info
