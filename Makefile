# Two commands for a newcomer:  `make demo`  and  `make test`.
# Both create .venv if it is missing; `demo` installs the package and what it needs to run, `test` adds the test
# and parity extras (nbdev, pytest, a CPU build of torch 2.13.0, transformers, diffusers). Stamps remember each.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.opensora_nb-run
STAMP_TEST := $(VENV)/.opensora_nb-test
NPROC ?= 2
export GLOG_v ?= 3

.PHONY: demo test install install-test export clean-nbs readme docs bench help

help:
	@echo "make demo   - set up .venv and run the main job on the built-in default"
	@echo "make test   - set up .venv with the test extras and run the notebooks as tests and pytest tests/"
	@echo "make export - nbdev_export + nbdev_clean (after editing nbs/)"
	@echo "make readme - regenerate README.md from nbs/index.ipynb"
	@echo "make bench  - run every bench/*.py (one JSON line each)"

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP_RUN): $(BIN)/python settings.ini setup.py
	$(BIN)/pip install -q --upgrade "pip>=24" "setuptools<82" wheel packaging
	$(BIN)/pip install -q -e .
	touch $(STAMP_RUN)

$(STAMP_TEST): $(STAMP_RUN)
	$(BIN)/pip install -q -e ".[dev,parity]"
	touch $(STAMP_TEST)

install: $(STAMP_RUN)

install-test: $(STAMP_TEST)

demo: $(STAMP_RUN)
	$(BIN)/opensora-demo

test: $(STAMP_TEST)
	$(BIN)/nbdev_test --n_workers $(NPROC) --timing
	$(BIN)/pytest -q tests/

export: $(STAMP_TEST)
	$(BIN)/nbdev_export
	$(BIN)/nbdev_clean

readme: $(STAMP_TEST)
	$(BIN)/python tools/docs.py readme

docs: $(STAMP_TEST)
	$(BIN)/python tools/docs.py site _docs

bench: $(STAMP_TEST)
	@for f in bench/*.py; do $(BIN)/python $$f; done
