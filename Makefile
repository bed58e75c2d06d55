# Two commands do everything: `make demo` and `make test`. Both create .venv if it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# Python writes its bytecode cache (__pycache__, ignored by git) under make, even where the
# environment says not to (PYTHONDONTWRITEBYTECODE=1 on these machines): the suite starts
# hundreds of Python processes (every CLI run, worker and script), and without the cache each
# compiled conveyor's modules from source again, as pytest did the test files (a CLI test file
# took a third more CPU so).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: demo test test-versions lint typecheck unit browser chaos bench bench-process bench-peers clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	rm -rf conveyor.db conveyor.db-wal conveyor.db-shm conveyor.db-wake
	$(BIN)/python examples/quickstart.py

test: $(VENV)/.installed-dev lint typecheck unit

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests examples
	$(BIN)/ruff format --check src tests examples

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy --strict src/

# Three test processes (pytest-xdist), a test file to each in turn: most tests wait on a server
# or a subprocess, so on these 2-core machines three take 8 minutes where two took 10:50 (the
# cores were busy 46% of the time with two). Tests never share storage (each has its own file,
# table prefix or key prefix), so they can run side by side.
unit: $(VENV)/.installed-dev browser
	$(BIN)/pytest -q -n 3 --dist loadfile

# The dashboard's browser test drives Debian's headless Chromium, and the PostgreSQL driver's
# PgBouncer tests start Debian's pgbouncer (a process of their own, never its service): both
# installed here when missing (apt-get, as root). Where that cannot be done, the browser test
# fails saying how to install it, and the PgBouncer tests skip saying so (fail under CI=true).
browser:
	@{ command -v chromedriver && { command -v pgbouncer || test -x /usr/sbin/pgbouncer; }; } >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver pgbouncer; } || true

# The suite and mypy under Python 3.12 and 3.13, by hand (about 10 minutes each, so not in
# `make test`): a venv each, .venv312 and .venv313, from these interpreters.
PYTHON312 ?= $(HOME)/.pyenv/versions/3.12.1/bin/python
PYTHON313 ?= $(HOME)/.pyenv/versions/3.13.0/bin/python
test-versions: browser
	$(MAKE) .venv312/.installed-dev VENV=.venv312 PYTHON=$(PYTHON312)
	$(MAKE) .venv313/.installed-dev VENV=.venv313 PYTHON=$(PYTHON313)
	for v in 312 313; do \
		.venv$$v/bin/mypy --strict --python-version $${v%??}.$${v#?} src/ && \
		.venv$$v/bin/pytest -q -n 3 --dist loadfile -p no:cacheprovider || exit 1; \
	done

# The slow fault tests (marked `chaos`), left out of `make test`.
chaos: $(VENV)/.installed-dev
	$(BIN)/pytest -q -m chaos

# conveyor against huey, saq, taskiq and arq on one Redis workload, in a virtualenv of their
# own (never the project's): by hand, about five minutes. docs/benchmarks.md has the last table.
PEERS_VENV := .venv-peers
$(PEERS_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PEERS_VENV)/bin/python -m pip install --quiet -e ".[redis]" huey saq taskiq taskiq-redis arq
	touch $@

bench-peers: $(PEERS_VENV)/.installed
	cd benchmarks && ../$(PEERS_VENV)/bin/python peers.py

# Speed figures, by hand: make bench DRIVER=sqlite (or memory, or a driver URL), and LOOP=uvloop
# for uvloop's event loop. bulk.py: push_many in batches of 10,000 beside its goal and the raw
# client's bulk write; memory.py: a worker's RSS while it runs 100,000 pending jobs.
DRIVER ?= sqlite
LOOP ?= asyncio
bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/throughput.py --driver $(DRIVER) --loop $(LOOP)
	$(BIN)/python benchmarks/bulk.py --driver $(DRIVER) --loop $(LOOP)
	$(BIN)/python benchmarks/memory.py --driver $(DRIVER) --loop $(LOOP)

# Issue 16's processing workload (one Redis INCR per job) next to its ceiling: make bench-process DRIVER=...
bench-process: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/process.py --driver $(DRIVER)

clean:
	rm -rf $(VENV) .venv312 .venv313 .pytest_cache .mypy_cache .ruff_cache conveyor.db*
