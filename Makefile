# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
NPM_DIR := tests/interop/js
NPM_STAMP := $(NPM_DIR)/node_modules/.installed

.PHONY: run test install test-deps npm-deps bench soak image-test clean lint

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP): $(VENV)/bin/python pyproject.toml
	$(PIP) install -q -e .
	touch $@

$(TEST_STAMP): $(STAMP)
	$(PIP) install -q -e '.[test]'
	touch $@

install: $(STAMP)

## Start one node with sensible defaults (Ctrl-C stops it cleanly).
run: $(STAMP)
	$(VENV)/bin/exchange-node start $(ARGS)

$(NPM_STAMP): $(NPM_DIR)/package.json
	@if command -v npm >/dev/null 2>&1; then \
	  cd $(NPM_DIR) && npm install --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else echo "npm not found: Grenache interop tests will be skipped"; fi

npm-deps: $(NPM_STAMP)

test-deps: $(TEST_STAMP) npm-deps

## Install what the tests need (Python and Node.js Grenache), lint, type-check and run the default suite.
test: test-deps lint
	$(PY) -m pytest -q -n 2 --dist loadfile $(PYTEST_ARGS)

## ruff over the tree and mypy over the package (settings in pyproject.toml).
lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

soak: test-deps
	$(PY) -m pytest -q -m soak $(PYTEST_ARGS)

## Build the Dockerfile with buildah and run the image's node (root; apt-get install -y buildah debootstrap).
image-test: test-deps
	$(PY) -m pytest -q -m container $(PYTEST_ARGS)

BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(TEST_STAMP)
	$(PIP) install -q -e '.[test,bench]'
	touch $@

## Run every benchmark (BENCH_ARGS="link --quick" to pick some).
bench: test-deps $(BENCH_STAMP)
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(NPM_DIR)/node_modules build *.egg-info
