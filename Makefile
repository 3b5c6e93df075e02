# The Makefile is the interface: CI and people call these targets, nothing else.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install services run test drill lint bench screenshots clean lock

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

# Local PostgreSQL and RabbitMQ (with the management plugin the tests use), started if stopped.
services:
	bash deploy/local/ensure-services.sh

# A cell per region (its own databases and vhost) behind the router; CELLS= runs one platform.
CELLS ?= uk,in

run: install services
	$(PY) -m services.platform run --cells '$(CELLS)'

test: install services lint
	$(PY) -m pytest

# The restore drill (docs/operations.md, "Back up and restore"): every database dumped by the
# backup jobs' script, restored with pg_restore, and nothing erased back.
drill: install services
	$(PY) -m pytest tests/e2e/test_restore_drill.py

# lint-imports keeps the layers: pyproject.toml, [tool.importlinter].
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy kernel services gateway
	$(VENV)/bin/lint-imports --no-cache

# Figures, not assertions: speed is shown by benchmarks, never by timed tests. One table, and
# bench/results/<date>.json and .png (docs/performance.md); BENCH_ARGS=--quick for a smoke run.
bench: install services
	$(PY) -m bench $(BENCH_ARGS)

# The console's screenshots in docs/console/ (the README shows them), from its browser tests.
screenshots: install services
	LEDGERDESK_SCREENSHOT_DIR=docs/console $(PY) -m pytest tests/e2e/test_console.py

# The image's dependencies, every package pinned with its hashes (the Dockerfile installs them
# with --require-hashes); run after changing pyproject.toml's dependencies.
lock: install
	CUSTOM_COMPILE_COMMAND="make lock" $(VENV)/bin/pip-compile --quiet --generate-hashes \
		--allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links \
		--output-file requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache *.egg-info
