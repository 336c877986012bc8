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

# Two workers, whole files per worker (module fixtures such as the e2e demo servers stay in one process):
# the suite mostly waits on loopback servers and polls, so this cuts it from ~18 to ~6 minutes on 2 cores.
# Then the production pass (tests/profile.py): the suite once more as ALGOMIRROR_ENV=production, on
# PostgreSQL only, with Redis for rate limits and the live bus, engine subprocesses in production mode.
# It runs tests/integration only, less test_chaos.py and test_sim_*: tests/unit, the chaos harness (it
# builds its own settings and engine environment) and the paper exchange's own tests (no settings, no
# database) never read the profile, so there they would only repeat pass 1 (the chaos runs alone are
# ~2.5 of its minutes); tests/e2e drive the SQLite demo, which production mode refuses (the profile
# skips them). Measured: ~7-8.5 min on a loaded 2-core machine, under the dev pass's ~8.5.
test: install-dev browser lint
	$(BIN)/pytest -q -p no:cacheprovider -n 2 --dist loadfile
	ALGOMIRROR_TEST_PROFILE=production $(BIN)/pytest -q -p no:cacheprovider -n 2 --dist loadfile \
	  tests/integration --ignore=tests/integration/test_chaos.py --ignore-glob='tests/integration/test_sim_*'

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
