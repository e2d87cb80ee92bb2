# mixerd: the two commands are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: help install system-deps run test lint typecheck importlint unit bench proto clean

help: ## show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv, install mixerd with its dev extra and the console UI's browser libraries
	@$(PY) scripts/fetch_ui_vendor.py

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

system-deps: ## install the Debian packages the integration tests run (redis with sentinel and redis-cli, prometheus, nginx, h2load, wrk, postgresql, chromium, systemd)
	@scripts/system-deps.sh

run: install ## start mixerd on its embedded default config
	$(VENV)/bin/mixerd serve $(ARGS)

lint: install
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

typecheck: install
	$(VENV)/bin/mypy

importlint: install
	$(VENV)/bin/lint-imports

unit: install
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

test: install system-deps lint typecheck importlint ## lint, type check, layering check and the whole test suite
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

bench: install system-deps ## run every benchmark (ARGS="NAME ..." for some): figures against in-run baselines, then the goals table (also benchmarks/last-run.json)
	$(PY) benchmarks/run.py $(ARGS)

proto: install ## regenerate src/mixerd/_proto from proto/
	$(PY) scripts/gen_protos.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .mypy_cache .ruff_cache .pytest_cache test-artifacts src/mixerd/server/ui/static/vendor
