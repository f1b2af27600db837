# hivebus: `make demo` runs the desk end to end, `make test` runs every check.
# Both create the virtual environment in .venv on first use.

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test lint typecheck pytest clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/hivebus demo

lint: $(BIN)/.installed
	$(BIN)/ruff check coordinator agents tests

typecheck: $(BIN)/.installed
	$(BIN)/mypy coordinator agents

pytest: $(BIN)/.installed
	$(BIN)/pytest

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .hivebus .mypy_cache .ruff_cache .pytest_cache
