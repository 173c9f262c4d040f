# Refinery developer commands. `make help` lists them.
#
#   make run                    the whole stack on this machine (embedded default)
#   make run WEB_PORT=8001 MLFLOW_PORT=5001
#   make run DEV=1              development mode: DEBUG on (the banner says so); off by default
#   make test                   make lint (ruff, import contracts) + pytest against real PostgreSQL/Redis/Chromium
#   make test PYTEST_ARGS='-m "not browser" -x'
#   make chaos                  tests/chaos only, on a private PostgreSQL and Redis they may restart
#   make docker-test            the Docker deployment, built and started for real (root or a running dockerd)
#
# Every target is idempotent. `venv` reinstalls only when requirements.lock or
# pyproject.toml changed (a hash of both is kept in .venv/.refinery-stamp).

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON      ?= python3.11
VENV        ?= .venv
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip
STAMP       := $(VENV)/.refinery-stamp
TORCH_PIN   := torch==2.13.0
LOCK_HASH   := $(shell cat requirements.lock pyproject.toml 2>/dev/null | sha256sum | cut -c1-16)

WEB_PORT    ?= $(or $(REFINERY_WEB_PORT),8000)
MLFLOW_PORT ?= $(or $(REFINERY_MLFLOW_PORT),5000)
PYTEST_ARGS ?=
CHROMIUM    ?= /usr/bin/chromium

# Tests never reach a model hub or a telemetry endpoint (the network may be closed).
TEST_ENV := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 \
            MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true

.PHONY: help venv run test chaos lint migrate bench services chromium lock clean distclean docker-test

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

venv: ## create .venv and install the project (torch 2.13.0 CPU first, then -c requirements.lock)
	@if [ -x "$(PY)" ] && [ -f "$(STAMP)" ] && [ "$$(cat $(STAMP))" = "$(LOCK_HASH)" ]; then \
	    echo "venv: up to date ($(VENV))"; exit 0; \
	fi; \
	set -e; \
	if [ ! -x "$(PY)" ]; then \
	    echo "venv: creating $(VENV) with $(PYTHON)"; \
	    $(PYTHON) -m venv $(VENV); \
	fi; \
	rm -f $(STAMP); \
	echo "venv: installing $(TORCH_PIN) (first, so that nothing pulls a CUDA build)"; \
	$(PIP) install -q $(TORCH_PIN); \
	echo "venv: installing -c requirements.lock -e '.[train,test,server]'"; \
	$(PIP) install -q -c requirements.lock -e '.[train,test,server]'; \
	echo "$(LOCK_HASH)" > $(STAMP); \
	echo "venv: ready"

run: venv ## start the whole stack: MLflow, web, Celery worker and beat (Ctrl-C stops it; DEV=1: DEBUG on)
	$(if $(DEV),DJANGO_DEBUG=true )REFINERY_WEB_PORT=$(WEB_PORT) REFINERY_MLFLOW_PORT=$(MLFLOW_PORT) $(PY) manage.py runstack

services: ## make sure PostgreSQL and Redis for the tests are up (starts local ones)
	@bash scripts/ensure_services.sh

chromium: ## make sure Debian's Chromium is installed for the browser tests
	@if [ -x "$(CHROMIUM)" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
	    echo "chromium: $(CHROMIUM) is missing; install the Debian package: sudo apt-get install -y chromium" >&2; exit 1; \
	fi; \
	echo "chromium: installing the Debian package chromium"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	[ -x "$(CHROMIUM)" ] || { echo "chromium: apt-get install chromium did not provide $(CHROMIUM)" >&2; exit 1; }

lint: venv ## ruff (lint and format check, settings in pyproject.toml) and the import contracts
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

test: venv services chromium lint ## make lint, pytest $(PYTEST_ARGS) against real services, then make chaos
	$(TEST_ENV) $(PY) -m pytest -p tests.plugins.fail_on_skip $(PYTEST_ARGS)
	$(MAKE) chaos  # PYTEST_ARGS reaches it through MAKEFLAGS or the environment, quotes intact

chaos: venv ## pytest tests/chaos on a private PostgreSQL and Redis (started and removed by tests.chaos.launch)
	$(TEST_ENV) $(PY) -m tests.chaos.launch -p tests.plugins.fail_on_skip $(PYTEST_ARGS)

docker-test: ## build the Docker images, start docker/docker-compose.yml for real and check it (scripts/docker_test.sh)
	bash scripts/docker_test.sh

migrate: venv ## apply database migrations (DATABASE_URL, or SQLite under var/)
	@mkdir -p "$${REFINERY_VAR_DIR:-var}"
	$(PY) manage.py migrate

bench: venv ## run every benchmark in bench/ (each prints its ratios)
	@shopt -s nullglob; files=(bench/bench_*.py bench/*/bench_*.py); \
	if [ $${#files[@]} -eq 0 ]; then echo "bench: no bench/bench_*.py yet"; exit 0; fi; \
	for f in "$${files[@]}"; do echo "== $$f"; PYTHONPATH=platform:. $(PY) "$$f" || exit $$?; done

lock: venv ## rewrite requirements.lock from the current .venv
	@{ sed -n '/^#/p' requirements.lock; \
	   $(PIP) freeze --exclude-editable | grep -viE '^refinery([=@ ]|$$)' | sed -E 's/^(torch==[^+]+)\+.*/\1/'; \
	 } > requirements.lock.new && mv requirements.lock.new requirements.lock
	@echo "lock: requirements.lock rewritten ($$(grep -vc '^#' requirements.lock) pins)"

clean: ## remove caches and build outputs (keeps .venv and var/)
	find . -path ./.venv -prune -o -path ./node_modules -prune -o -type d -name __pycache__ -exec rm -rf {} +
	rm -rf .pytest_cache build dist *.egg-info test-results .import_linter_cache

distclean: clean ## clean, and remove .venv too (var/ holds your data: rm -rf var/ yourself)
	rm -rf $(VENV)
