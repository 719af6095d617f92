# Oculab: `make run` starts the standalone server, `make test` runs every check.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# torch wheels for this lab's machines exist for CPython 3.11; prefer it when present.
PYTHON ?= $(shell for p in python3.11 python3.12 python3.13 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	&& { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: help install lock run test lint typecheck pytest pytest-sqlite pytest-postgres services bench clean \
	frontend openapi frontend-test frontend-lint frontend-typecheck frontend-unit frontend-e2e chromium
.PHONY: images bundle lock-images lock-worker

# The web app (frontend/): built by Vite into the Python package, where the API serves it.
NPM := npm --prefix frontend
NODE_MODULES := frontend/node_modules/.package-lock.json
WEB_BUILD := server/web/static/index.html
WEB_SOURCES := $(shell find frontend/src frontend/public -type f ! -name '*.test.*' \
	! -path 'frontend/src/test/*' 2>/dev/null) frontend/index.html frontend/vite.config.ts \
	frontend/tsconfig.json frontend/package-lock.json
CHROMIUM ?= /usr/bin/chromium

help:
	@echo "make run      install, build the web app if stale, start Oculab on http://$(HOST):$(PORT)"
	@echo "make test     ruff, mypy, pytest (SQLite and PostgreSQL) and the web app's checks (ESLint first)"
	@echo "make frontend build the web app (frontend/ -> server/web/static/) when stale"
	@echo "make openapi  regenerate the web app's typed API client after an endpoint change"
	@echo "make install  create $(VENV) with every extra (ml, dev)"
	@echo "make bench    run the benchmarks in bench/ against PostgreSQL"
	@echo "make images   build the api and worker images (podman or docker; CUDA=cu126)"
	@echo "make bundle   the air-gapped install bundle (dist/oculab-offline-<version>.tar.gz)"

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements/ml.lock
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements/ml.lock -e '.[ml,dev]'
	@touch $@

# The tested versions (torch, ultralytics and everything under them), after a change
# of pyproject.toml's dependencies: install without the lock, test, then freeze.
lock:
	$(BIN)/python -m pip install --quiet -e '.[ml,dev]'
	{ sed -n '/^#/p' requirements/ml.lock; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v '^oculab'; } > requirements/ml.lock.new
	mv requirements/ml.lock.new requirements/ml.lock

run: install frontend
	$(BIN)/oculab standalone --host $(HOST) --port $(PORT)

# The local PostgreSQL and Redis the tests talk to; started if they are down.
services:
	@pg_isready -q -h 127.0.0.1 -p 5432 || { \
		echo "starting PostgreSQL"; \
		pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | head -n1) main start; }
	@for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done; \
		pg_isready -h 127.0.0.1 -p 5432
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || { \
		echo "starting Redis"; \
		redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no; }
	@for i in $$(seq 1 30); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break; sleep 1; done; \
		redis-cli -h 127.0.0.1 ping

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

# pytest's own exit codes (5 = nothing collected) fail the target like any other.
# The two passes run at once: each keeps a CPU busy only about 80% of the time (it waits
# on the processes, timers and disk its tests use), so together they take some 11
# minutes instead of 18 on two cores. Each has Redis databases of its own
# (tests/helpers.py); their outputs come one after the other. `install` and `services`
# are prerequisites of the passes, made once by the inner make.
pytest:
	@$(MAKE) --no-print-directory -j2 --output-sync=target pytest-sqlite pytest-postgres

pytest-sqlite: install services
	OCULAB_TEST_DATABASE=sqlite $(BIN)/pytest

pytest-postgres: install services
	OCULAB_TEST_DATABASE=postgres $(BIN)/pytest

test: lint typecheck pytest frontend-test

# ---- the web app ------------------------------------------------------------------------
# npm ci when node_modules is missing or older than the lockfile; no browser downloads.
$(NODE_MODULES): frontend/package.json frontend/package-lock.json
	@command -v npm >/dev/null || { echo "Node.js 20.19+ and npm are required for the web app"; exit 1; }
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(NPM) ci --no-audit --no-fund
	@touch $@

# Rebuilt when any source, the lockfile or the config is newer than the build.
$(WEB_BUILD): $(NODE_MODULES) $(WEB_SOURCES)
	$(NPM) run build
	@touch $@

frontend: $(WEB_BUILD)

# After changing an endpoint: writes frontend/src/api/openapi.json and schema.d.ts
# (tests/test_frontend.py fails until they match the API).
openapi: install $(NODE_MODULES)
	$(NPM) run gen:api

# ESLint (frontend/eslint.config.js): typescript-eslint, the rules of hooks, jsx-a11y.
frontend-lint: $(NODE_MODULES)
	$(NPM) run lint

frontend-typecheck: $(NODE_MODULES)
	$(NPM) run typecheck

frontend-unit: $(NODE_MODULES)
	$(NPM) test

# The system's Chromium drives the end-to-end tests (Playwright never downloads one).
chromium:
	@test -x $(CHROMIUM) || { \
		echo "installing Debian's chromium for the end-to-end tests"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update && $$SUDO apt-get install -y chromium; }

# Against a real `oculab standalone` on a free port with a temp data dir; then against a
# server-mode stack (PostgreSQL, Redis, api, scheduler, two workers).
frontend-e2e: install frontend chromium services
	CHROMIUM_PATH=$(CHROMIUM) $(NPM) run e2e
	CHROMIUM_PATH=$(CHROMIUM) $(NPM) run e2e -- -c playwright.server.config.ts
	$(BIN)/python bench/web_bundle.py

frontend-test: frontend-lint frontend-typecheck frontend-unit frontend-e2e

bench: install services
	$(BIN)/python bench/api.py
	$(BIN)/python bench/export.py
	$(BIN)/python bench/job_queue.py
	$(BIN)/python bench/autolabel.py
	$(BIN)/python bench/train.py
	$(MAKE) frontend
	$(BIN)/python bench/web_bundle.py
	$(BIN)/python bench/ui_upload.py

# ---- container images and the offline bundle -------------------------------------------
# Builds both images with podman, else docker (Dockerfile). Offline: point the build
# arguments at the lab's mirrors, e.g.
#   make images PIP_INDEX_URL=https://pypi.lab/simple NPM_REGISTRY=https://npm.lab/ \
#        CA_BUNDLE_FILE=lab-ca.pem PYTHON_IMAGE=registry.lab/library/python:3.11-slim-bookworm@sha256:...
ENGINE ?= $(shell command -v podman 2>/dev/null || command -v docker 2>/dev/null)
IMAGE_PREFIX ?= ghcr.io/oculab
IMAGE_TAG ?= $(shell awk '$$1 == "appVersion:" { gsub(/"/, "", $$2); print $$2 }' helm/oculab/Chart.yaml)
# The worker's torch build: requirements/torch-$(CUDA).lock (docs/install.md, "Images").
CUDA ?= cu126
IMAGE_BUILD_ARGS = --build-arg TORCH_VARIANT=$(CUDA) \
	$(foreach arg,PIP_INDEX_URL TORCH_INDEX_URL NPM_REGISTRY PYTHON_IMAGE NODE_IMAGE,\
	  $(if $($(arg)),--build-arg $(arg)=$($(arg)))) \
	$(if $(CA_BUNDLE_FILE),--build-arg CA_BUNDLE="$$(cat $(CA_BUNDLE_FILE))")

# ENGINE_FLAGS: anything else for `build`, e.g. --runtime runc where crun cannot run.
ENGINE_FLAGS ?=

images:
	@test -n "$(ENGINE)" || { echo "make images needs podman or docker"; exit 1; }
	$(ENGINE) build $(ENGINE_FLAGS) $(IMAGE_BUILD_ARGS) --target api \
		-t $(IMAGE_PREFIX)/oculab-api:$(IMAGE_TAG) .
	$(ENGINE) build $(ENGINE_FLAGS) $(IMAGE_BUILD_ARGS) --target worker \
		-t $(IMAGE_PREFIX)/oculab-worker:$(IMAGE_TAG) .

# The air-gapped bundle (scripts/offline-bundle.sh): the chart, the images just built,
# the example values and optional weights (make bundle BUNDLE_ARGS="--weights yolo11n.pt").
bundle:
	scripts/offline-bundle.sh $(BUNDLE_ARGS)

# The images' hash-pinned locks, from requirements/ml.lock's versions: api.lock and
# worker.lock from PyPI (or pip's configured mirror), then torch-$(CUDA).lock from torch's
# index for that variant (download.pytorch.org must be reachable for cu126, cu128, cpu).
lock-images: install
	$(BIN)/python scripts/image_locks.py common
	$(BIN)/python scripts/image_locks.py torch cu130

lock-worker: install
	$(BIN)/python scripts/image_locks.py torch $(CUDA)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
	rm -rf frontend/node_modules frontend/test-results server/web/static
