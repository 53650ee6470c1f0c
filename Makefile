# Two commands for a newcomer:  `make demo`  and  `make test`.
# Both create .venv if it is missing; `demo` installs the package and what it needs to run, `test` adds the test
# and parity extras (nbdev, pytest, a CPU build of torch 2.13.0, transformers, diffusers). Stamps remember each.
# `make test` runs the notebooks and the pytest files on NPROC workers each (pytest-xdist; one file stays on one
# worker, so its module fixtures are built once; the slowest files go first, in the order tests/conftest.py gives).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.opensora_nb-run
STAMP_TEST := $(VENV)/.opensora_nb-test
NPROC ?= 2
export GLOG_v ?= 3

.PHONY: demo test install install-test export clean-nbs readme docs bench help world world-opensora world-plan

help:
	@echo "make demo   - set up .venv and run the main job on the built-in default"
	@echo "make test   - set up .venv with the test extras and run the notebooks as tests and pytest tests/"
	@echo "make export - nbdev_export + nbdev_clean (after editing nbs/)"
	@echo "make readme - regenerate README.md from nbs/index.ipynb"
	@echo "make bench  - run every bench/*.py (one JSON line each)"
	@echo "make docs   - build the offline docs site into _docs/ (make docs-check: check it in headless Chromium)"
	@echo "make lab    - JupyterLab on nbs/ with the opensora_nb kernel (LAB_ARGS=--no-browser for no browser)"
	@echo "make world  - rebuild the built-in world's tiny weights from scratch, both systems (data, training, shipping, match rates)"

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP_RUN): $(BIN)/python settings.ini setup.py
	$(BIN)/pip install -q --upgrade "pip>=24" "setuptools<82" wheel packaging
	$(BIN)/pip install -q -e .
	touch $(STAMP_RUN)

$(STAMP_TEST): $(STAMP_RUN)
	$(BIN)/pip install -q -e ".[dev,parity,docs]"
	touch $(STAMP_TEST)

install: $(STAMP_RUN)

install-test: $(STAMP_TEST)

demo: $(STAMP_RUN)
	$(BIN)/opensora-demo

test: $(STAMP_TEST)
	$(BIN)/nbdev_test --n_workers $(NPROC) --timing
	$(BIN)/pytest -q -n $(NPROC) --dist loadfile --no-loadscope-reorder --durations=15 tests/

export: $(STAMP_TEST)
	$(BIN)/nbdev_export
	$(BIN)/nbdev_clean

readme: $(STAMP_TEST)
	$(BIN)/python tools/docs.py readme

# docs: the offline site (Sphinx + myst-nb, MathJax inside the site) into _docs/; docs-check: open it in headless
# Chromium (installed from Debian when missing), count broken links, raw math, missing images; screenshots.
STAMP_DOCS := $(VENV)/.opensora_nb-docs
$(STAMP_DOCS): $(STAMP_TEST)
	$(BIN)/pip install -q -e ".[docs]"
	touch $(STAMP_DOCS)

docs: $(STAMP_DOCS)
	$(BIN)/python tools/docs.py site _docs

docs-check: docs
	@command -v chromium >/dev/null || { echo "installing Debian's chromium"; \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -q chromium || \
	  { $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -q && $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -q chromium; }; }
	$(BIN)/python tools/docs_check.py _docs --screenshots docs/screenshots

# lab: JupyterLab + ipywidgets in .venv, the kernel `opensora_nb` (.venv's python), opened on nbs/.
# `make lab LAB_ARGS=--no-browser` for a server without a browser.
STAMP_LAB := $(VENV)/.opensora_nb-lab
LAB_ARGS ?=
$(STAMP_LAB): $(STAMP_RUN)
	$(BIN)/pip install -q -e ".[lab]"
	$(BIN)/python tools/lab.py install-kernel
	touch $(STAMP_LAB)

lab: $(STAMP_LAB)
	$(BIN)/jupyter lab --notebook-dir=nbs --MappingKernelManager.default_kernel_name=opensora_nb \
	  $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) $(LAB_ARGS)

.PHONY: docs-check lab

bench: $(STAMP_TEST)
	@for f in bench/*.py; do $(BIN)/python $$f; done

# world: the built-in shapes world's weights, from nothing, with the project's own commands (nbs/17b_world.ipynb):
# the Open-Sora v1.0 half, then the Open-Sora-Plan v1.0.0 half (world-plan: its CausalVAE starts from the SD VAE).
# The VAEs are narrow convolutions: MindSpore's own CPU kernels (OPENSORA_NB_KERNELS=native) are the fast ones for them;
# the denoisers train faster on the default `cpu` kernels (their tanh GELU, nbs/03_stdit "Where a small model's step goes").
WORLD ?= outputs/world
world: world-opensora world-plan

world-opensora: $(STAMP_RUN)
	OPENSORA_NB_KERNELS=native $(BIN)/opensora-world data --out $(WORLD)
	OPENSORA_NB_KERNELS=native $(BIN)/opensora-train-vae --config configs/world/sd_vae.yaml --pixel_loss l1 --max_steps 1000
	OPENSORA_NB_KERNELS=native $(BIN)/opensora-train-vae --config configs/world/sd_vae.yaml --resume_from_checkpoint latest
	$(BIN)/opensora-world scale-vae --build $(WORLD)
	OPENSORA_NB_KERNELS=native $(BIN)/opensora-infer-vae --csv_path $(WORLD)/opensora/video_caption.csv --vae_type sd \
	  --vae_checkpoint $(WORLD)/sd_vae/scaled --image_size 64 --output_path $(WORLD)/opensora/latents
	$(BIN)/opensora-infer-t5 --csv_path $(WORLD)/opensora/video_caption.csv --t5_model_dir $(WORLD)/t5 \
	  --model_max_length 16 --output_path $(WORLD)/opensora/text_emb
	$(BIN)/opensora-train --config configs/world/stdit.yaml
	$(BIN)/opensora-world ship --build $(WORLD) --systems opensora
	$(BIN)/opensora-world check --num_prompts 48 --systems opensora

# world-plan: the Open-Sora-Plan half; needs world-opensora's data, text encoder and SD VAE (sd_vae/scaled).
world-plan: $(STAMP_RUN)
	OPENSORA_NB_KERNELS=native $(BIN)/opensora-train-vae --config configs/world/causalvae.yaml
	$(BIN)/opensora-world scale-vae --build $(WORLD) --vae causalvae
	OPENSORA_NB_KERNELS=native $(BIN)/opensora-infer-vae --csv_path $(WORLD)/plan/plan.json --vae_type causalvae \
	  --vae_checkpoint $(WORLD)/causalvae/scaled --image_size 64 --transform plan --output_path $(WORLD)/plan/latents
	$(BIN)/opensora-infer-t5 --csv_path $(WORLD)/plan/plan.json --t5_model_dir $(WORLD)/t5 \
	  --model_max_length 16 --output_path $(WORLD)/plan/text_emb
	$(BIN)/opensora-plan-train --config configs/world/latte.yaml
	$(BIN)/opensora-world ship --build $(WORLD) --systems plan
	$(BIN)/opensora-world check --num_prompts 48 --systems plan
