# Two entry points, both creating the virtual environment .venv on first use:
#   make demo   runs `python -m subspacelab demo` inside it
#   make test   runs the whole test suite (the command CI runs)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_ENV := SCIPY_ARRAY_API=1 HYPOTHESIS_PROFILE=ci NUMBA_CACHE_DIR=$(CURDIR)/.numba_cache

.PHONY: demo test info install

# torch is pinned to the CPU build that lies on disk; a loose requirement would fetch a CUDA build.
$(STAMP): pyproject.toml requirements/nodeps.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[numba,dask,test]'
	$(BIN)/pip install -q --no-deps -r requirements/nodeps.txt
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m subspacelab demo

info: $(STAMP)
	$(BIN)/python -m subspacelab info

# The kernel tests run twice: here under the Numba CUDA simulator (so the CUDA kernels run
# on the CPU), then with the whole suite.
test: $(STAMP)
	$(TEST_ENV) NUMBA_ENABLE_CUDASIM=1 $(BIN)/python -m pytest -q -m cudasim tests/kernels
	$(TEST_ENV) $(BIN)/python -m pytest
