# Two entry points, both creating the virtual environment .venv on first use:
#   make demo   runs `python -m subspacelab demo` inside it
#   make test   runs the whole test suite (the command CI runs)
# and the documentation site:
#   make docs   builds docs/_build/html (warnings are errors; CI runs it after make test)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.docs-installed
TEST_ENV := SCIPY_ARRAY_API=1 HYPOTHESIS_PROFILE=ci NUMBA_CACHE_DIR=$(CURDIR)/.numba_cache

.PHONY: demo test info install docs

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

# The site: API reference generated from the package, user guide (docs/*.md), and the example
# gallery, which runs the scripts in examples/ (see docs/conf.py). Warnings are errors.
$(DOCS_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[numba,dask,test,docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(TEST_ENV) $(BIN)/python -m sphinx -W --keep-going -b html docs docs/_build/html
