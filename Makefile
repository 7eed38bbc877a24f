# Two commands on a fresh machine:
#   make demo   creates .venv, installs pimmi, builds a demo corpus and clusters it
#   make test   creates .venv with the test tools, runs ruff and pytest
# Then 'make serve' browses the demo's clusters (http://127.0.0.1:8765/), 'make report' writes them as HTML.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO := demo
THREADS ?= 2

PORT ?= 8765

.PHONY: demo serve report test lint docs clean

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
	@echo "Browse the clusters: 'make serve', then open http://127.0.0.1:$(PORT)/ (or 'make report': static HTML in $(DEMO)/report)"

serve: $(VENV)/.installed-demo
	$(BIN)/pimmi serve $(DEMO)/workspace --port $(PORT)

report: $(VENV)/.installed-demo
	$(BIN)/pimmi report $(DEMO)/workspace -o $(DEMO)/report

docs: $(VENV)/.installed-test
	$(BIN)/python -m pimmi.cli reference > docs/cli.md

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .

test: $(VENV)/.installed-test lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
