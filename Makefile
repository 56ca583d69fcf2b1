# Two commands set everything up on a fresh machine:
#   make run    the daemon on embedded defaults (127.0.0.1:9095, SQLite journal in var/)
#   make test   every tier: lint, unit, integration (real peers), e2e
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST := $(PY) -m pytest

.PHONY: help install system-deps run test lint test-unit test-integration test-e2e test-faults env-up env-down env-status env-build bench clean

help:
	@echo "make run               run the daemon on embedded defaults"
	@echo "make test              lint + every test tier (builds and starts real peers)"
	@echo "make lint              ruff, mypy --strict, import-linter"
	@echo "make test-unit         pure and in-process tests only"
	@echo "make test-integration  tests against real peers (Alertmanager, Kafka, Kubernetes, ...)"
	@echo "make test-e2e          the daemon as a process against real peers"
	@echo "make test-faults       inject faults into the daemon as a process (real peers; root for tmpfs)"
	@echo "make env-up|env-down|env-status   run the real peers by hand (see docs/testing.md)"
	@echo "make bench             intake benchmark (see docs/benchmarks.md)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

install: $(STAMP)

system-deps:
	bash tests/env/install-system-deps.sh

run: $(STAMP)
	$(VENV)/bin/remediator run

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test-unit: $(STAMP)
	$(PYTEST) tests/unit

test-integration: $(STAMP) system-deps
	$(PYTEST) tests/integration

test-e2e: $(STAMP) system-deps
	$(PYTEST) tests/e2e

test-faults: $(STAMP) system-deps
	$(PYTEST) tests/faults

test: $(STAMP) system-deps lint
	$(PY) -m tests.env build
	$(PYTEST) tests

env-build: $(STAMP) system-deps
	$(PY) -m tests.env build

env-up: $(STAMP) system-deps
	$(PY) -m tests.env up

env-down: $(STAMP)
	$(PY) -m tests.env down

env-status: $(STAMP)
	$(PY) -m tests.env status

bench: $(STAMP)
	$(PY) bench/intake.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
