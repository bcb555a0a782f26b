# The two commands a newcomer needs (README.md): `make up` and `make test`.
# Everything lives in a project-local virtualenv so nothing leaks into the system Python.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: up test lint typecheck unit install bench clean

up: install
	$(BIN)/garrison up

test: install lint typecheck
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

bench: install
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.loop_overhead
	$(BIN)/python -m bench.client_overhead
	$(BIN)/python -m bench.retrieval

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
