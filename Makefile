# Two commands for a newcomer:  `make demo`  and  `make test`.
# Both create .venv if it is missing and install the project once (a stamp file remembers).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.opensora_nb-installed
NPROC ?= 2

.PHONY: demo test install export clean-nbs readme docs bench help

help:
	@echo "make demo   - set up .venv and run the main job on the built-in default"
	@echo "make test   - set up .venv and run the notebooks as tests and pytest tests/"
	@echo "make export - nbdev_export + nbdev_clean (after editing nbs/)"
	@echo "make readme - regenerate README.md from nbs/index.ipynb"
	@echo "make bench  - run every bench/*.py (one JSON line each)"

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): $(BIN)/python settings.ini setup.py
	$(BIN)/pip install -q --upgrade "pip>=24" "setuptools<82" wheel packaging
	$(BIN)/pip install -q -e ".[dev,parity]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/opensora-demo

test: $(STAMP)
	$(BIN)/nbdev_test --n_workers $(NPROC) --timing
	$(BIN)/pytest -q tests/

export: $(STAMP)
	$(BIN)/nbdev_export
	$(BIN)/nbdev_clean

readme: $(STAMP)
	$(BIN)/python tools/docs.py readme

docs: $(STAMP)
	$(BIN)/python tools/docs.py site _docs

bench: $(STAMP)
	@for f in bench/*.py; do $(BIN)/python $$f; done
