# hivebus: `make demo` runs the desk end to end, `make test` runs every check.
# Both create the virtual environment in .venv on first use.

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

BENCH_VENV ?= .venv-bench

.PHONY: demo test lint typecheck pytest bench chaos clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/hivebus demo

lint: $(BIN)/.installed
	$(BIN)/ruff check coordinator agents tests bench

# mypy reads the package as it is imported, `hivebus` (coordinator/ and agents/ mapped into
# it, see pyproject.toml): a tree of links under build/ shows it that way.
typecheck: $(BIN)/.installed
	rm -rf build/typecheck && mkdir -p build/typecheck/hivebus
	ln -s $(CURDIR)/coordinator/* build/typecheck/hivebus/
	ln -s $(CURDIR)/agents build/typecheck/hivebus/agents
	cd build/typecheck && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p hivebus

pytest: $(BIN)/.installed
	$(BIN)/pytest

test: lint typecheck pytest

# Benchmarks run in an environment of their own, with FastStream and matplotlib in it.
$(BENCH_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	touch $@

bench: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python -m bench

chaos: $(BIN)/.installed
	$(BIN)/python -m bench.chaos

clean:
	rm -rf $(VENV) $(BENCH_VENV) .hivebus .mypy_cache .ruff_cache .pytest_cache
