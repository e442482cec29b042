# Two commands on a fresh machine: `make demo` (main job) and `make test` (tests).
# Both create .venv and install migrec into it first. torch is installed on its own,
# pinned, before anything that depends on it, so no CUDA build is pulled in.
# The browser tests drive Debian's chromium (Playwright's own browser download does not work
# offline): it is installed with apt-get when /usr/bin/chromium is absent (as root, or via sudo).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
DATA ?= ../shared/data
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test install benchmark screenshots clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

$(CHROMIUM):
	@echo "installing Debian's chromium for the browser tests"
	@$(SUDO) apt-get update -qq >/dev/null
	@DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null

install: $(VENV)/.installed $(CHROMIUM)

demo: $(VENV)/.installed
	$(VENV)/bin/migrec demo --data $(DATA)/ml-100k

test: $(VENV)/.installed $(CHROMIUM)
	MIGREC_DATA=$(DATA) $(PY) -m pytest

# refresh docs/dashboard/*.png: the browser tests, with their screenshots kept
screenshots: $(VENV)/.installed $(CHROMIUM)
	MIGREC_DATA=$(DATA) MIGREC_SCREENSHOTS=1 $(PY) -m pytest tests/test_dashboard_browser.py

benchmark: $(VENV)/.installed
	$(PY) benchmarks/run_core.py --data $(DATA)

clean:
	rm -rf $(VENV) .cache .pytest_cache
