# Set-up and entry points. `make demo` and `make test` each create or reuse .venv, install the CPU build of
# torch and the project, and make sure Fashion-MNIST is available.
#   make check  fast development loop: ruff (lint + format) and the tests not marked slow/browser/gpu
#   make test   CI (.ci/run): ruff check, ruff format --check, mypy, then every test but gpu (slow and browser
#               included, docstring examples included); each part runs even when an earlier one fails, and the
#               target fails if any did
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
# Extra pip arguments for torch, e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu" on a
# machine whose pip would otherwise pick a CUDA build.
TORCH_PIP_ARGS ?=
DATA_DIR ?= data
STAMP := $(VENV)/.unlearnkit-installed
PYTEST := $(BIN)/python -m pytest -p no:cacheprovider --durations=15
# Per-test time limits (pytest-timeout, fixture set-up included): the digits original trains in about a minute on
# 2 idle cores, the slowest behaviour tests take a few minutes; the limits leave room for a loaded machine.
CHECK_TIMEOUT ?= 300
TEST_TIMEOUT ?= 1200

.PHONY: setup data demo check lint typecheck test test-pytest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -q "torch==$(TORCH_VERSION)" $(TORCH_PIP_ARGS)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,report,browser,ray]"
	touch $(STAMP)

setup: $(STAMP)

data: setup
	@bash scripts/get-data.sh "$(DATA_DIR)" "$(BIN)/unlearnkit"

# --data-dir only when the files were fetched there; otherwise the system copy (Debian package) is found.
DATA_ARG = $(shell $(BIN)/python -c 'import sys; from unlearnkit.data.datasets import find_fashion_mnist; print("--data-dir $(DATA_DIR)" if find_fashion_mnist("$(DATA_DIR)") else "")' 2>/dev/null)

demo: setup data
	$(BIN)/unlearnkit demo $(DATA_ARG)

lint: setup
	@status=0; \
	echo "ruff check ."; $(BIN)/ruff check . || status=1; \
	echo "ruff format --check ."; $(BIN)/ruff format --check --output-format=concise . || status=1; \
	exit $$status

typecheck: setup
	$(BIN)/mypy

check: setup
	@status=0; \
	$(MAKE) --no-print-directory lint || status=1; \
	echo 'pytest -m "not slow and not browser and not gpu" --timeout=$(CHECK_TIMEOUT)'; \
	$(PYTEST) -q -m "not slow and not browser and not gpu" --timeout=$(CHECK_TIMEOUT) || status=1; \
	exit $$status

test-pytest: setup data
	$(PYTEST) -q -m "not gpu" --timeout=$(TEST_TIMEOUT)

test: setup data
	$(MAKE) --no-print-directory -k lint typecheck test-pytest

bench: setup data
	$(BIN)/unlearnkit bench benchmarks/fashion_mnist.toml --out runs/bench-fashion_mnist $(DATA_ARG)

clean:
	rm -rf $(VENV) build src/*.egg-info .mypy_cache .ruff_cache
