# koe: two commands. `make run` sets up and serves; `make test` sets up and checks everything.
# Setup is idempotent: each step runs only when what it produces is missing or out of date.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
HOST   ?= 127.0.0.1
PORT   ?= 8000

# Debian packages koe needs at run time, and the extra ones its tests need. Firefox runs Web Audio only while an
# output device plays, so its tests give it a PulseAudio with a null sink (tests/browser/firefox.py).
APT_RUN  := libspeexdsp1
APT_TEST := chromium firefox-esr pulseaudio

# llama.cpp is compiled from source by llama-cpp-python (its prebuilt alternative needs glibc 2.38; Debian 12 has 2.36),
# in the background while everything else installs (scripts/install-python). LLAVA_BUILD=OFF skips the multimodal
# library, the one optional part its CMakeLists builds by default; llama.cpp's tests, examples, tools and server are
# already off when it is built as a subproject. GGML_NATIVE stays on (the default): -march=native for this CPU.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)

# Two test workers, one file each at a time: much of the suite waits on real-time audio, so the cores stay busy.
PYTEST_PARALLEL ?= -n 2 --dist loadfile

.PHONY: run test setup setup-dev apt-run apt-test lint typecheck pytest bench clean

run: setup
	$(VENV)/bin/koe serve --host $(HOST) --port $(PORT)

test: setup-dev
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests
	$(VENV)/bin/mypy src
	$(VENV)/bin/pytest -q $(PYTEST_PARALLEL)

# The venv step comes first: on a fresh machine it installs the Debian packages itself, in parallel with the
# compile; afterwards apt-run and apt-test only check that nothing was removed since.
setup: $(VENV)/.installed-run apt-run
setup-dev: $(VENV)/.installed-dev apt-run apt-test

apt-run:
	@scripts/ensure-apt $(APT_RUN)

apt-test:
	@scripts/ensure-apt $(APT_TEST)

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "koe needs Python 3.11 or newer: set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml scripts/install-python | $(PY)
	scripts/install-python $(VENV) "" $(APT_RUN)
	@touch $@

$(VENV)/.installed-dev: pyproject.toml scripts/install-python | $(PY)
	scripts/install-python $(VENV) dev $(APT_RUN) $(APT_TEST)
	@touch $@ $(VENV)/.installed-run

lint: setup-dev
	$(VENV)/bin/ruff check src tests && $(VENV)/bin/ruff format --check src tests

typecheck: setup-dev
	$(VENV)/bin/mypy src

pytest: setup-dev
	$(VENV)/bin/pytest -q $(PYTEST_PARALLEL)

bench: setup
	$(VENV)/bin/koe bench engines

clean:
	rm -rf $(VENV) build src/*.egg-info .mypy_cache .ruff_cache .pytest_cache
