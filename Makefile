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

.PHONY: help install run test lint typecheck pytest services bench clean

help:
	@echo "make run      install and start Oculab standalone on http://$(HOST):$(PORT)"
	@echo "make test     install and run ruff, mypy and pytest on SQLite and PostgreSQL"
	@echo "make install  create $(VENV) with every extra (ml, dev)"
	@echo "make bench    run the benchmarks in bench/ against PostgreSQL"

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[ml,dev]'
	@touch $@

run: install
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
pytest: install services
	OCULAB_TEST_DATABASE=sqlite $(BIN)/pytest
	OCULAB_TEST_DATABASE=postgres $(BIN)/pytest

test: lint typecheck pytest

bench: install services
	$(BIN)/python bench/api.py
	$(BIN)/python bench/export.py
	$(BIN)/python bench/job_queue.py
	$(BIN)/python bench/autolabel.py
	$(BIN)/python bench/train.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
