# Two commands set everything up on a fresh machine:
#   make run    the daemon on embedded defaults (127.0.0.1:9095, SQLite journal in var/)
#   make test   every tier: lint, unit, integration (real peers), e2e, the image
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST := $(PY) -m pytest

.PHONY: help install system-deps run test lint test-unit test-integration test-contract test-e2e test-faults image test-image lock env-up env-down env-status env-build bench demo clean

help:
	@echo "make run               run the daemon on embedded defaults"
	@echo "make test              lint + every test tier (builds and starts real peers)"
	@echo "make lint              ruff, mypy --strict, import-linter"
	@echo "make test-unit         pure and in-process tests only"
	@echo "make test-integration  tests against real peers (Alertmanager, Kafka, Kubernetes, ...)"
	@echo "make test-contract     the journal contract, against SQLite and PostgreSQL"
	@echo "make test-e2e          the daemon as a process against real peers"
	@echo "make test-faults       inject faults into the daemon as a process (real peers; root for tmpfs)"
	@echo "make image             build the container image remediator:dev with buildah (docs/image.md)"
	@echo "make test-image        build the image, then run it: daemon, helm, pg_dump, writes"
	@echo "make lock              refresh requirements.lock and requirements-build.lock from pyproject.toml"
	@echo "make env-up|env-down|env-status   run the real peers by hand (see docs/testing.md)"
	@echo "make bench             intake (and its floor), end to end, storm, memory, alert to first write (docs/benchmarks.md)"
	@echo "make demo              a bad release, alerted, rolled back and verified: every peer real, narrated"

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

# Also part of `make test` (pytest tests collects tests/contract).
test-contract: $(STAMP) system-deps
	$(PYTEST) tests/contract

test-e2e: $(STAMP) system-deps
	$(PYTEST) tests/e2e

test-faults: $(STAMP) system-deps
	$(PYTEST) tests/faults

image: $(STAMP)
	PYTHON=$(PY) bash image/build.sh

# The image tier's fixture builds the image too (and fails, never skips, if it cannot).
test-image: image
	$(PYTEST) tests/image

# Pins every Python dependency (with hashes) for the image, from a throwaway venv.
# PIP_FIND_LINKS is unset so local wheel folders cannot leak hashes PyPI does not have.
LOCK_VENV := build/lock-venv
PIP_TOOLS := pip-tools==7.6.2
PIP_COMPILE := env -u PIP_FIND_LINKS $(LOCK_VENV)/bin/pip-compile --quiet --generate-hashes \
	--strip-extras --no-emit-index-url --no-emit-find-links
lock:
	test -x $(LOCK_VENV)/bin/pip-compile || { $(PYTHON) -m venv $(LOCK_VENV) && \
		$(LOCK_VENV)/bin/pip install --quiet --upgrade pip '$(PIP_TOOLS)'; }
	$(PIP_COMPILE) --upgrade --output-file requirements.lock pyproject.toml
	$(PIP_COMPILE) --upgrade --allow-unsafe --all-build-deps --only-build-deps \
		--output-file requirements-build.lock pyproject.toml

test: $(STAMP) system-deps lint
	$(PY) -m tests.env build
	PYTHON=$(PY) bash image/build.sh
	$(PYTEST) tests

env-build: $(STAMP) system-deps
	$(PY) -m tests.env build

env-up: $(STAMP) system-deps
	$(PY) -m tests.env up

env-down: $(STAMP)
	$(PY) -m tests.env down

env-status: $(STAMP)
	$(PY) -m tests.env status

# Some ten minutes in all: intake at 50 and at 1 alert per request, the same load
# against the stack alone (the floor), end to end, storm and memory, then alert to
# first Kubernetes write on kwok (docs/benchmarks.md).
bench: $(STAMP)
	$(PY) bench/intake.py --seconds 10
	$(PY) bench/intake.py --seconds 10 --alerts-per-request 1
	$(PY) bench/floor.py
	$(PY) bench/floor.py --alerts-per-request 1
	$(PY) bench/pipeline.py
	$(PY) bench/first_write.py

demo: $(STAMP) system-deps
	$(PY) -m tests.demo

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
