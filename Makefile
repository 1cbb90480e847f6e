# Two commands a new user needs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test demo lint bench clean

setup: $(STAMP)

# Re-install only when the dependency declaration or the pins change (idempotent, quick when done).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

test: setup
	$(BIN)/ruff check ssl_radiology tests scripts
	$(BIN)/python -m pytest -q

demo: setup
	$(BIN)/ssl-rad experiment configs/experiment/demo.yaml --out demo-output

lint: setup
	$(BIN)/ruff check ssl_radiology tests scripts
	$(BIN)/ruff format --check ssl_radiology tests scripts

bench: setup
	$(BIN)/python scripts/bench/ingest.py

clean:
	rm -rf $(VENV) demo-output phantom-study scaling-phantom .pytest_cache
