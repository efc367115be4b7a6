# Set-up and entry points. `make demo` and `make test` each create or reuse .venv, install the CPU build of
# torch and the project, and make sure Fashion-MNIST is available.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
# Extra pip arguments for torch, e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu" on a
# machine whose pip would otherwise pick a CUDA build.
TORCH_PIP_ARGS ?=
DATA_DIR ?= data
STAMP := $(VENV)/.unlearnkit-installed

.PHONY: setup data demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -q "torch==$(TORCH_VERSION)" $(TORCH_PIP_ARGS)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,report,browser]"
	touch $(STAMP)

setup: $(STAMP)

data: setup
	@bash scripts/get-data.sh "$(DATA_DIR)" "$(BIN)/unlearnkit"

demo: setup data
	$(BIN)/unlearnkit demo --data-dir "$(DATA_DIR)"

test: setup data
	$(BIN)/python -m pytest -q -m "not gpu" -p no:cacheprovider

bench: setup data
	$(BIN)/unlearnkit bench benchmarks/fashion_mnist.toml --out runs/bench-fashion_mnist --data-dir "$(DATA_DIR)"

clean:
	rm -rf $(VENV) build src/*.egg-info
