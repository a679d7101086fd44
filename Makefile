# Two commands: `make lab` runs the lab, `make test` runs every test.
# Each creates .venv and installs the pinned dependencies (requirements.lock) on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: lab test lint typecheck pytest venv model clean

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "mxflow needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	@touch $@

# Scenarios 1, 2 and 2 + enhanced filtering side by side on the shipped corpus (docs/lab.md).
lab: venv
	$(BIN)/mxflow lab run --scenario all

test: lint typecheck pytest

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: venv
	$(BIN)/mypy

pytest: venv
	$(BIN)/pytest -n 2 --dist loadfile

# Rebuild the shipped spam model from data/corpus (byte-identical to the committed one).
model: venv
	$(BIN)/python -m mxflow.checks.train data/corpus src/mxflow/data/bayes.model.gz

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .mypy_cache .ruff_cache .pytest_cache
