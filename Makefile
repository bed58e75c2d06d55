# Two commands do everything: `make demo` and `make test`. Both create .venv if it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck unit chaos bench clean

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
	rm -f conveyor.db conveyor.db-wal conveyor.db-shm
	$(BIN)/python examples/quickstart.py

test: $(VENV)/.installed-dev lint typecheck unit

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests examples
	$(BIN)/ruff format --check src tests examples

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy --strict src/

unit: $(VENV)/.installed-dev
	$(BIN)/pytest -q

# The slow fault tests (marked `chaos`), left out of `make test`.
chaos: $(VENV)/.installed-dev
	$(BIN)/pytest -q -m chaos

# Speed figures, by hand: make bench DRIVER=sqlite (or memory, or a driver URL)
DRIVER ?= sqlite
bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/throughput.py --driver $(DRIVER)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache conveyor.db*
