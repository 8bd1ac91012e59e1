# One command to see it work (make demo), one to pass the tests (make test). Both install what they need.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SURVEIL := $(BIN)/surveil

.PHONY: setup demo demo-monitor test test-recovery test-chaos test-cluster test-unit kafka-up kafka-down kafka-status bench soak lint format clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Python packages, then the jars (Kafka broker, Spark's Delta + Kafka connector) into caches outside the repo.
setup: $(STAMP)
	$(SURVEIL) setup

demo: setup
	$(SURVEIL) demo

# The demo with Prometheus (Debian's package, installed when missing) scraping the stream; left running.
demo-monitor: setup
	$(SURVEIL) demo --monitor

# Everything but the crash/restart suite (marked slow: it cold-starts the stream a dozen times), the
# fault-injection suite (chaos) and the deployment suite (cluster: spark-submit, SASL_SSL); CI runs all four.
test: setup
	$(BIN)/python -m pytest -q -m "not slow and not chaos and not cluster"

test-recovery: setup
	$(BIN)/python -m pytest -q -m slow

# Faults (kill -9 loop, broker outage, alerts topic refusing, failed Delta write, poison input, SIGTERM):
# each case runs the stream as its own process and ends with a delta-rs audit of every table.
test-chaos: setup
	$(BIN)/python -m pytest -q -rP -m chaos

# The jobs as deployed: spark-submit on a Spark standalone cluster on loopback (master + two workers), the
# backfill job against the stream's tables, and the stream over a SASL_SSL broker.
test-cluster: setup
	$(BIN)/python -m pytest -q -m cluster

test-unit: setup
	$(BIN)/python -m pytest -q tests/unit

kafka-up: setup
	$(SURVEIL) kafka up

kafka-down: $(STAMP)
	$(SURVEIL) kafka down

kafka-status: $(STAMP)
	$(SURVEIL) kafka status

bench: setup
	$(SURVEIL) bench

# Not in CI: 30 minutes at 1,000 quotes/s, a sample a minute, then whether anything grows (reports/soak.json).
soak: setup
	$(SURVEIL) soak

lint: $(STAMP)
	$(BIN)/ruff check src tests jobs
	$(BIN)/ruff format --check src tests jobs

format: $(STAMP)
	$(BIN)/ruff format src tests jobs
	$(BIN)/ruff check --fix src tests jobs

clean:
	-$(SURVEIL) kafka down
	rm -rf .state reports spark-warehouse .pytest_cache
