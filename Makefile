# Bastion — `make run` to start, `make test` to check everything.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
BASTION_HOME ?= .bastion

.PHONY: run test lint typecheck unit bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.run-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[paper]'
	touch $@

$(VENV)/.test-installed: pyproject.toml scripts/system-deps.sh | $(BIN)/python
	./scripts/system-deps.sh
	$(BIN)/pip install --quiet -e '.[paper,test]'
	touch $@ $(VENV)/.run-installed

run: $(VENV)/.run-installed
	@if [ ! -f "$(BASTION_HOME)/bastion.toml" ]; then \
	  $(BIN)/bastion init --home "$(BASTION_HOME)" && \
	  $(BIN)/bastion accounts create demo --home "$(BASTION_HOME)" && \
	  $(BIN)/bastion keys create --account demo --scopes read,trade,cancel --generate \
	    --label "make run demo key" --home "$(BASTION_HOME)"; \
	fi
	$(BIN)/bastion serve --home "$(BASTION_HOME)"

lint: $(VENV)/.test-installed
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(VENV)/.test-installed
	$(BIN)/mypy --strict src bench

unit: $(VENV)/.test-installed
	$(BIN)/pytest

test: lint typecheck unit

bench: $(VENV)/.test-installed
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/flood.py --check --check-latency
	$(BIN)/python bench/firewall.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
