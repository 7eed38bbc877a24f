# Two commands on a fresh machine:
#   make demo   creates .venv, installs pimmi, builds a demo corpus and clusters it
#   make test   creates .venv with the test tools, runs ruff and pytest
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO := demo
THREADS ?= 2

.PHONY: demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-%: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[$*]'
	touch $@

demo: $(VENV)/.installed-demo
	$(BIN)/python -m pimmi.demo build $(DEMO)
	$(BIN)/pimmi --nb-threads $(THREADS) fill $(DEMO)/images $(DEMO)/workspace --erase
	$(BIN)/pimmi --nb-threads $(THREADS) query $(DEMO)/images $(DEMO)/workspace -o $(DEMO)/matches.csv
	$(BIN)/pimmi clusters $(DEMO)/workspace -o $(DEMO)/clusters.csv
	$(BIN)/python -m pimmi.demo report $(DEMO)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .

test: $(VENV)/.installed-test lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
