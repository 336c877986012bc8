# AlgoMirror. Two commands for a newcomer: `make run` (demo at http://127.0.0.1:8000) and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
CHROMIUM ?= /usr/bin/chromium

.PHONY: run test lint typecheck unit install install-dev browser bench chaos clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==24.3.1
	$(BIN)/pip install --quiet -r requirements-build.lock

$(VENV)/.installed: $(BIN)/python requirements.lock requirements-build.lock pyproject.toml
	$(BIN)/pip install --quiet -r requirements-build.lock -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.lock
	$(BIN)/pip install --quiet -r requirements-dev.lock
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	$(BIN)/algomirror db upgrade
	$(BIN)/algomirror run

# Debian's chromium for the browser tests; installed once when missing (CI runs as root).
browser:
	@if [ ! -x $(CHROMIUM) ]; then \
	  echo "installing Debian chromium for the browser tests"; \
	  if [ "$$(id -u)" = "0" ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; \
	fi

lint: install-dev
	$(BIN)/ruff check src tests bench migrations stubs
	$(BIN)/ruff format --check src tests bench migrations stubs
	$(BIN)/mypy

# Three workers on 2 cores (the suite waits on loopback servers and polls as much as it computes), whole
# files per worker (module fixtures such as the e2e demo servers stay in one process), longest files
# first (tests/conftest.py orders them; xdist's own reorder by test count is off: it left the one-test
# browser files for the end, one worker busy while the others idled).
# Then the production pass (tests/profile.py): ALGOMIRROR_ENV=production on PostgreSQL, with Redis for
# rate limits and the live bus, engine subprocesses and CLI commands in production mode, for the files
# that reach tests/profile.py through their imports (the others cannot differ there). Those files'
# PostgreSQL cases run only in this pass (ALGOMIRROR_TEST_PASSES=2), their SQLite cases only in the
# first: each test once per database. Timings: docs/benchmarks.md "Test suite".
test: install-dev browser lint
	ALGOMIRROR_TEST_PASSES=2 $(BIN)/pytest -q -p no:cacheprovider -n 3 --dist loadfile --no-loadscope-reorder
	ALGOMIRROR_TEST_PASSES=2 ALGOMIRROR_TEST_PROFILE=production $(BIN)/pytest -q -p no:cacheprovider -n 3 --dist loadfile \
	  --no-loadscope-reorder tests/integration

unit: install-dev
	$(BIN)/pytest -q tests/unit

bench: install-dev
	$(BIN)/python bench/run_all.py

# The chaos harness (docs/reliability.md): e.g. make chaos CHAOS_ARGS="--seed 7 --cycles 1000 --accounts 10
# --strategies 4 --database postgresql". Exits 1, printing the replay command, when the audit finds anything.
CHAOS_ARGS ?= --seed 1
chaos: install
	$(BIN)/algomirror chaos $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
