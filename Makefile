# Two commands: `make demo` (the offline demo on the embedded local model) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: test demo lint typecheck pytest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,local]'
	touch $@

test: $(VENV)/.installed
	$(BIN)/ruff check agent tools tests examples bench
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: $(VENV)/.installed
	$(BIN)/ruff check agent tools tests examples bench

demo: $(VENV)/.installed
	$(BIN)/python examples/offline_demo.py

bench: $(VENV)/.installed
	$(BIN)/python bench/loop_overhead.py

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
