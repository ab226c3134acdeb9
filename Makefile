# koe: two commands. `make run` sets up and serves; `make test` sets up and checks everything.
# Setup is idempotent: each step runs only when what it produces is missing or out of date.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
HOST   ?= 127.0.0.1
PORT   ?= 8000

# Debian packages koe needs at run time, and the extra ones its tests need.
APT_RUN  := libspeexdsp1
APT_TEST := chromium

# llama.cpp is compiled from source by llama-cpp-python (no usable prebuilt wheel exists for this glibc):
# build only the library, without the multimodal, server and example targets, on every core.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
	-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF -DGGML_NATIVE=OFF
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: run test setup setup-dev apt-run apt-test lint typecheck pytest bench clean

run: setup
	$(VENV)/bin/koe serve --host $(HOST) --port $(PORT)

test: setup-dev
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests
	$(VENV)/bin/mypy src
	$(VENV)/bin/pytest -q

setup: apt-run $(VENV)/.installed-run
setup-dev: apt-run apt-test $(VENV)/.installed-dev

apt-run:
	@scripts/ensure-apt $(APT_RUN)

apt-test:
	@scripts/ensure-apt $(APT_TEST)

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "koe needs Python 3.11 or newer: set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(PY)
	$(PIP) install --progress-bar off -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PIP) install --progress-bar off -e '.[dev]'
	@touch $@ $(VENV)/.installed-run

lint: setup-dev
	$(VENV)/bin/ruff check src tests && $(VENV)/bin/ruff format --check src tests

typecheck: setup-dev
	$(VENV)/bin/mypy src

pytest: setup-dev
	$(VENV)/bin/pytest -q

bench: setup
	$(VENV)/bin/koe bench engines

clean:
	rm -rf $(VENV) build src/*.egg-info .mypy_cache .ruff_cache .pytest_cache
