# The two commands of the README: `make repro` (the pipeline) and `make test` (every test).
# Each builds .venv with the pinned versions when it is missing or out of date.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
UV     := uv==0.13.9
# the venv with uv in it (fails where uv cannot be installed); uv reads from pip's sources (tools/uv_sources.py)
WITH_UV    = { test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); } && $(BIN)/python -m pip install --quiet $(UV)
UV_SOURCES = $$($(BIN)/python tools/uv_sources.py)

.PHONY: venv lock repro repro-gpu test sync-check nbtest pytest bench carry device-check clean-venv

venv: $(STAMP)

## requirements.txt's pins, every package they pull in pinned by requirements.lock (`make lock` writes it);
## installed by uv (about 50 s here against about 3 minutes for pip), or by pip where uv cannot be installed.
## --compile-bytecode as pip does: where PYTHONDONTWRITEBYTECODE is set, an uncompiled venv compiles at every import
## (`import pat.train` 7 s against 3 s; a clean make repro's 31 DVC stages took ~500 s against ~315 s)
$(STAMP): requirements.txt requirements.lock settings.ini setup.py
	if $(WITH_UV); then $(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python $(UV_SOURCES) -r requirements.txt -c requirements.lock; \
	else test -x $(BIN)/python && $(BIN)/python -m pip install --quiet -r requirements.txt -c requirements.lock; fi
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name pat --display-name "Python (pat .venv)" >/dev/null
	touch $(STAMP)

## requirements.lock from requirements.txt: every package pinned, for any platform, Python 3.11+ (hypothesis and numpy 2.4 need 3.11)
lock:
	$(WITH_UV)
	$(BIN)/uv pip compile --quiet --universal --python-version 3.11 $(UV_SOURCES) requirements.txt -o requirements.lock

## The main job: the DVC pipeline on the active profile of params.yaml (default: embedded synthetic data)
## Data first, then every pending seed of the profile in one pool (all cores busy), then dvc repro records them and builds the tables,
## each stage numbered [stage k of n] (python -m pat.repro: counted from dvc status and dvc dag, see nbs/12_repro.ipynb).
## The loss benchmark is left out (no table needs it; it wants a quiet machine): `make bench`
repro: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro profile
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro $$($(BIN)/dvc stage list --name-only | grep -E '^(source|prepare|stats)@' | tr '\n' ' ')
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pat.train pack $(PACK)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pat.repro --skip bench

## The gpu profile, six runs at a time on each GPU (as measured on an H200: see README)
repro-gpu: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pat.pipeline use gpu
	$(MAKE) repro PACK="--per-device 6"

## Every test: package in sync with the notebooks, notebooks clean, nbdev_test, pytest
test: venv sync-check nbtest pytest

sync-check: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" bash tools/check_sync.sh

nbtest: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/nbdev_test --n_workers 2 --do_print --timing

pytest: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest -q tests

## The loss benchmark (Table 5.2, Fig. 6.3) as the DVC stage `bench` (recorded in dvc.lock; `dvc repro -f bench` re-measures)
bench: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro bench

## What the GPU machine needs beside the checkout (see tools/device_check.py): .carry/wheels, .carry/camvid, and
## .carry/old_triton_losses.py, the kernels' host code at AB_OLD (before issue 14's host-time change), for its loss_ab
CAMVID ?= $(or $(PAT_CAMVID_DIR),../shared/data/camvid)
AB_OLD ?= 7ab0a2a
carry: venv
	$(BIN)/python -m pip download --quiet --no-deps --dest .carry/wheels segmentation-models-pytorch==0.6.0
	test -d .carry/camvid || $(BIN)/python tools/device_check.py pack-camvid $(CAMVID) .carry/camvid
	git show $(AB_OLD):pat/triton_losses.py > .carry/old_triton_losses.py

## On a GPU machine (PyTorch with CUDA): the CUDA tests, a step of every loss x model, a packed slice of the gpu profile
device-check:
	python3 tools/device_check.py run --carry .carry --out $${OUT:-.device-check/out}

clean-venv:
	rm -rf $(VENV)

## The documentation site from the notebooks, offline, into _site/ (open _site/index.html; see tools/build_docs.py).
## KaTeX comes from npm into tools/docs/node_modules on first use; docs-check loads every page in headless Chromium
.PHONY: docs docs-check
docs: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python tools/build_docs.py --out _site

docs-check: docs
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python tools/check_docs_chromium.py _site
