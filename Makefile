# The two commands of the README: `make repro` (the pipeline) and `make test` (every test).
# Each builds .venv with the pinned versions when it is missing or out of date.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv repro test sync-check nbtest pytest bench clean-venv

venv: $(STAMP)

$(STAMP): requirements.txt settings.ini setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name pat --display-name "Python (pat .venv)" >/dev/null
	touch $(STAMP)

## The main job: the DVC pipeline on the active profile of params.yaml (default: embedded synthetic data)
repro: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

## Every test: package in sync with the notebooks, notebooks clean, nbdev_test, pytest
test: venv sync-check nbtest pytest

sync-check: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" bash tools/check_sync.sh

nbtest: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/nbdev_test --n_workers 2 --do_print --timing

pytest: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest -q tests

bench: venv
	$(BIN)/python -m pat.bench

clean-venv:
	rm -rf $(VENV)
