# The two set-up commands of the README work on a fresh machine:
#   make quickstart   create .venv, install torch 2.13.0 (CPU) first, then anyshape, run the quickstart
#   make test         the same environment, then the test suite (CI runs this)
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.anyshape-installed
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_VERBOSITY ?= error

.PHONY: quickstart test test-fast lint bench-extract clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

quickstart: $(STAMP)
	$(VENV)/bin/anyshape quickstart

test: $(STAMP)
	$(PY) -m pytest -m "not gpu" -q

test-fast: $(STAMP)
	$(PY) -m pytest -m "not gpu and not slow" -q

lint: $(STAMP)
	$(VENV)/bin/ruff check nas profilers tests benchmarks
	$(VENV)/bin/mypy

bench-extract: $(STAMP)
	$(PY) benchmarks/extract.py

clean:
	rm -rf $(VENV) studies/quickstart
