# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROTOS := $(shell find proto -name '*.proto')
SERVICES := $(wildcard services/*)

.PHONY: run test unit lint bench install proto clean

run: install
	$(BIN)/crm up

test: install
	$(BIN)/ruff check .
	$(BIN)/pytest

unit: install
	$(BIN)/pytest -m "not servers"

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python -m bench

install: $(STAMP) $(VENV)/.proto

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==25.3

$(STAMP): $(BIN)/python requirements.txt requirements-local.txt requirements-dev.txt libs/crmkit/pyproject.toml $(wildcard services/*/pyproject.toml)
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e libs/crmkit $(addprefix -e ,$(SERVICES))
	touch $@

# gRPC code is generated from the contracts at build time, never committed.
$(VENV)/.proto: $(STAMP) $(PROTOS) proto/setup.py
	$(BIN)/pip install --quiet --no-deps --no-build-isolation --force-reinstall ./proto
	rm -rf proto/build proto/*.egg-info
	touch $@

clean:
	rm -rf $(VENV) proto/build proto/*.egg-info
	find . -name __pycache__ -prune -exec rm -rf {} +
