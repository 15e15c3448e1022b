# Bastion — `make run` to start, `make test` to check everything.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
BASTION_HOME ?= .bastion

.PHONY: run test lint typecheck unit bench fuzz audit clean

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
	$(BIN)/bandit --quiet --recursive src

typecheck: $(VENV)/.test-installed
	$(BIN)/mypy --strict src bench

unit: $(VENV)/.test-installed
	$(BIN)/pytest

test: lint typecheck unit

bench: $(VENV)/.test-installed
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/flood.py --check --check-latency
	$(BIN)/python bench/firewall.py

# Schemathesis through the signing hook for FUZZ_MINUTES (default 10); see docs/security-testing.md.
FUZZ_MINUTES ?= 10
fuzz: $(VENV)/.test-installed
	$(BIN)/python bench/fuzz.py --minutes $(FUZZ_MINUTES)

# Known vulnerabilities in the installed packages, from PyPI's advisory data: needs the network.
# --strict: a package that could not be looked up fails the audit instead of passing unchecked.
audit: $(VENV)/.test-installed
	$(BIN)/pip-audit --strict --local --skip-editable --progress-spinner off

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
