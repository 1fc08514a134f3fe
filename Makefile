# The two commands a new user runs: `make demo` and `make test`.
# Both create .venv on first use; nothing else needs installing by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit integration faults bench up down docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[local,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m streamproc.demo

# Parallel (pytest-xdist): most of the suite waits (consumer-group joins, outages,
# worker restarts; under one core busy on average), so 4 workers pay on 2 cores; each
# starts its own broker and PostgreSQL. Tests are handed out one by one, the longest
# first (tests/conftest.py): the run takes about as long as its longest test (kill -9).
# `make test PYTEST_PARALLEL=` runs it in one process.
PYTEST_PARALLEL ?= -n 4 --dist load --maxschedchunk 1

test: $(STAMP) lint typecheck
	$(BIN)/python -m pytest -q $(PYTEST_PARALLEL)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/python -m pytest -q tests/integration

faults: $(STAMP)
	$(BIN)/python -m pytest -q tests/faults

bench: $(STAMP)
	$(BIN)/python -m benchmarks

up: $(STAMP)
	$(BIN)/streamproc local up

down: $(STAMP)
	$(BIN)/streamproc local down

# CONFIG.md and the editors' JSON Schema are generated from the config models;
# tests/unit/test_config_doc.py and test_config_schema.py fail while either is stale.
docs: $(STAMP)
	$(BIN)/python -m streamproc.config.reference_doc > CONFIG.md
	$(BIN)/streamproc schema > schema/pipeline.schema.json

clean:
	rm -rf $(VENV) .run .pytest_cache .mypy_cache .ruff_cache .hypothesis
