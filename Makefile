# koe: two commands. `make run` sets up and serves; `make test` sets up and checks everything.
# Setup is idempotent: each step runs only when what it produces is missing or out of date.
#
# Every Python package comes from uv.lock (exact versions and hashes, transitive ones included), installed by uv,
# which itself is pinned by hash in scripts/uv-requirements.txt. After editing the dependencies in pyproject.toml,
# `make lock` re-resolves the lock (`make lock UPGRADE=1` moves everything to the newest allowed versions); commit
# both files.

PYTHON ?= python3
VENV   := .venv
UV_DIR := .uv
UV     := $(UV_DIR)/bin/uv
HOST   ?= 127.0.0.1
PORT   ?= 8000

# uv never downloads a Python of its own (the machine's is used) and keeps the project's venv at .venv.
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON := $(PYTHON)
# llama.cpp is compiled from source by llama-cpp-python (its prebuilt alternative needs glibc 2.38; Debian 12 has
# 2.36), with the CMake options in pyproject.toml ([tool.uv.extra-build-variables]: x86-64-v3, not -march=native).
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)

# Debian packages: what compiling llama.cpp needs, what koe needs at run time, and the extra ones its tests need.
# Firefox runs Web Audio only while an output device plays, so its tests give it a PulseAudio with a null sink
# (tests/browser/firefox.py). The cluster tests start their own redis-server on a free loopback port (never the
# package's service), and deploy/compose.yaml is checked with docker-compose's `config` (no Docker engine needed).
APT_BUILD := cmake ninja-build g++
APT_RUN   := libspeexdsp1
APT_TEST  := chromium firefox-esr pulseaudio redis-server docker-compose

# Three test workers on two cores, one file each at a time: much of the suite waits on real-time audio (replies are
# paced as a listener hears them), so a third worker fills the cores (2,244 tests: 511 s with two, 438 s with three).
PYTEST_PARALLEL ?= -n 3 --dist loadfile

# The Node clients the tests run unmodified (the openai npm package), pinned by tests/node/package-lock.json.
NODE_DIR := tests/node

.PHONY: run test setup setup-dev apt-run apt-test lint typecheck pytest bench lock clean fuzz

run: setup
	$(VENV)/bin/koe serve --host $(HOST) --port $(PORT)

test: setup-dev
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests
	$(VENV)/bin/mypy src
	$(VENV)/bin/pytest -q $(PYTEST_PARALLEL)

# The venv step comes first: on a fresh machine it installs the Debian packages itself, in parallel with the
# Python packages and the compile; afterwards apt-run and apt-test only check that nothing was removed since.
setup: $(VENV)/.installed-run apt-run
setup-dev: $(VENV)/.installed-dev apt-run apt-test $(NODE_DIR)/node_modules/.installed

apt-run:
	@scripts/ensure-apt $(APT_RUN)

apt-test:
	@scripts/ensure-apt $(APT_TEST)

$(UV): scripts/uv-requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "koe needs Python 3.11 or newer: set PYTHON=python3.11")'
	rm -rf $(UV_DIR)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps --target $(UV_DIR) \
		-r scripts/uv-requirements.txt
	@touch $@

# `run` keeps the dev packages when they are there (make test, then make run); `dev` installs exactly the lock.
$(VENV)/.installed-run: uv.lock pyproject.toml scripts/install-python scripts/install-voices | $(UV)
	UV=$(UV) scripts/install-python run $(APT_BUILD) $(APT_RUN)
	@touch $@

$(VENV)/.installed-dev: uv.lock pyproject.toml scripts/install-python scripts/install-voices | $(UV)
	UV=$(UV) scripts/install-python dev $(APT_BUILD) $(APT_RUN) $(APT_TEST)
	@touch $@ $(VENV)/.installed-run

# npm ci installs exactly the lock file; Node.js and npm come from Debian when the machine has no npm.
$(NODE_DIR)/node_modules/.installed: $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	@command -v npm >/dev/null 2>&1 || scripts/ensure-apt nodejs npm
	npm ci --prefix $(NODE_DIR) --no-audit --no-fund --loglevel=error
	@touch $@

lock: | $(UV)
	$(UV) lock $(if $(UPGRADE),--upgrade)

lint: setup-dev
	$(VENV)/bin/ruff check src tests && $(VENV)/bin/ruff format --check src tests

typecheck: setup-dev
	$(VENV)/bin/mypy src

pytest: setup-dev
	$(VENV)/bin/pytest -q $(PYTEST_PARALLEL)

bench: setup
	$(VENV)/bin/koe bench engines

fuzz: setup
	$(VENV)/bin/koe bench fuzz

clean:
	rm -rf $(VENV) $(UV_DIR) build src/*.egg-info .mypy_cache .ruff_cache .pytest_cache $(NODE_DIR)/node_modules
