# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOCKS  := requirements.txt requirements-local.txt requirements-dev.txt deploy/docker/build-requirements.txt
PROTOS := $(shell find proto -name '*.proto')
SERVICES := $(wildcard services/*)

.PHONY: run test unit lint proto-lint proto-baseline bench bench-stack fuzz install proto clean catalogue lock

run: install
	$(BIN)/crm up

# The suite on PYTEST_WORKERS processes (pytest-xdist), whole modules to a worker and tests/e2e as
# one unit (conftest.py; docs/testing.md, "Parallel runs"). PYTEST_WORKERS=0 runs it in this process.
PYTEST_WORKERS ?= 2
test: lint
	$(BIN)/pytest -n $(PYTEST_WORKERS)

# No server: neither the stand-ins (mark `servers`) nor whole service processes (`e2e`); under a minute
unit: install
	$(BIN)/pytest -m "not servers and not e2e"

# ruff (lint and format), mypy ([tool.mypy] in pyproject.toml: the chassis strict, the services' every function
# checked; docs/testing.md, "Type checking") and the proto contracts
lint: install proto-lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The gRPC contracts: `buf lint` under proto/buf.yaml, and `buf breaking` against the committed
# baseline, the contract as last recorded (docs/testing.md). buf is the npm package, pinned,
# installed under .tools/ (not globally); it needs no network once installed.
BUF_VERSION := 1.75.0
BUF := .tools/node_modules/.bin/buf
BUF_STAMP := .tools/.buf-$(BUF_VERSION)
PROTO_BASELINE := proto/baseline.txtpb

$(BUF_STAMP):
	npm install --prefix .tools --no-save --no-package-lock --no-audit --no-fund --loglevel=error \
	  @bufbuild/buf@$(BUF_VERSION)
	$(BUF) --version | grep -qx '$(BUF_VERSION)'
	touch $@

proto-lint: $(BUF_STAMP)
	$(BUF) lint proto
	$(BUF) breaking proto --against $(PROTO_BASELINE)

# Record the contracts as they are now as the baseline. Refused if that breaks the old one,
# unless ALLOW_BREAKING=1 says the break is deliberate (a reviewer then sees what the baseline lost).
proto-baseline: $(BUF_STAMP)
	@[ "$(ALLOW_BREAKING)" = 1 ] || [ ! -f $(PROTO_BASELINE) ] || $(BUF) breaking proto --against $(PROTO_BASELINE) || { \
	  echo "make proto-baseline: the contracts break the baseline; ALLOW_BREAKING=1 records them anyway" >&2; exit 1; }
	$(BUF) build proto --exclude-source-info -o $(PROTO_BASELINE)

bench: install
	$(BIN)/python -m bench

# `crm up` with every service and worker, driven from this process (bench/README.md); a few minutes
bench-stack: install
	$(BIN)/python -m bench.stack --profile 20

# The fuzz run of `make test` (tests/fuzz) with many more examples per operation (docs/testing.md).
# CRM_FUZZ_EXAMPLES and CRM_FUZZ_SEED may be set on the command line.
CRM_FUZZ_EXAMPLES ?= 200
fuzz: install
	CRM_FUZZ_EXAMPLES=$(CRM_FUZZ_EXAMPLES) $(BIN)/pytest tests/fuzz --timeout=0

# docs/events: one JSON Schema per event type and version, and the catalogue page
catalogue: install
	$(BIN)/crm catalogue

install: $(STAMP) $(VENV)/.proto

# Everything from PyPI comes from a hashed lock (docs/testing.md, "Dependencies"): first pip,
# setuptools and grpcio-tools (the images' build tools), then the whole venv. Our own packages
# install without their dependencies, built with the venv's locked setuptools.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r deploy/docker/build-requirements.txt

$(STAMP): $(BIN)/python $(LOCKS) libs/crmkit/pyproject.toml $(wildcard services/*/pyproject.toml)
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e libs/crmkit $(addprefix -e ,$(SERVICES))
	touch $@

# The locks from their inputs: each .in file resolved, with every transitive dependency, into its
# .txt (exact versions, the hash of each file PyPI has for them, any platform). Run it after editing
# an .in file (needs PyPI); versions not asked to change stay as locked. tests/deploy/test_locks.py
# checks, offline, that each lock has what its .in asks for.
UV_COMPILE = $(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
  --custom-compile-command "make lock"
lock: $(STAMP)
	$(UV_COMPILE) requirements.in -o requirements.txt
	$(UV_COMPILE) deploy/docker/build-requirements.in -o deploy/docker/build-requirements.txt
	$(UV_COMPILE) requirements-local.in -o requirements-local.txt
	$(UV_COMPILE) requirements-dev.in -o requirements-dev.txt

# gRPC code is generated from the contracts at build time, never committed.
$(VENV)/.proto: $(STAMP) $(PROTOS) proto/setup.py proto/pyproject.toml
	$(BIN)/pip install --quiet --no-deps --no-build-isolation --force-reinstall ./proto
	rm -rf proto/build proto/*.egg-info
	touch $@

clean:
	rm -rf $(VENV) .tools proto/build proto/*.egg-info
	find . -name __pycache__ -prune -exec rm -rf {} +

# Deployment (docs/operations.md): one image per service, and the Kubernetes manifests
# rendered and validated offline (deploy/k8s/validate.py; policies in tests/deploy/).
.PHONY: images images-check k8s-validate
IMAGE_PREFIX ?= crm-
IMAGE_TAG    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo dev)

# buildah + mmdebstrap (Debian packages), no Docker engine: deploy/images.py. images-check also
# looks inside each image and gets 200 from its api's /healthz; it skips when the tools are absent.
REBUILD_BASE ?=
IMAGES_ARGS = --prefix $(IMAGE_PREFIX) --tag $(IMAGE_TAG) $(if $(REBUILD_BASE),--rebuild-base)
images: install
	$(BIN)/python deploy/images.py build $(IMAGES_ARGS)

images-check: install
	$(BIN)/python deploy/images.py check $(IMAGES_ARGS)

k8s-validate: install
	$(BIN)/python deploy/k8s/validate.py
