# Two commands on a fresh machine: `make demo` (main job) and `make test` (tests).
# Both create .venv and install migrec into it first. torch is installed on its own,
# pinned, before anything that depends on it, so no CUDA build is pulled in.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
DATA ?= ../shared/data

.PHONY: demo test install benchmark clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/migrec demo --data $(DATA)/ml-100k

test: $(VENV)/.installed
	MIGREC_DATA=$(DATA) $(PY) -m pytest

benchmark: $(VENV)/.installed
	$(PY) benchmarks/run_core.py --data $(DATA)

clean:
	rm -rf $(VENV) .cache .pytest_cache
