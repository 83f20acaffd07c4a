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

.PHONY: install repro test lint clean exp-show plots pr-report

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt requirements-assets.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-assets.txt
	touch $(STAMP)

repro: install
	$(BIN)/dvc repro

# dvc plots show on a page that works offline: the template inlines the vega scripts from a
# pinned wheel (bertfit.plots_page), generated here because it is not ours to commit
PLOTS_TEMPLATE := dvc_plots/template.html
plots: install
	$(BIN)/python -m bertfit.plots_page $(PLOTS_TEMPLATE)
	$(BIN)/dvc plots show --html-template $(PLOTS_TEMPLATE)

# the markdown a pull request's reviewer reads (bertfit.review): params and metrics diff against
# BASELINE, evaluate's pictures, and dvc plots diff's offline page; run it after `make repro`
BASELINE ?= main
pr-report: install
	$(BIN)/python -m bertfit.review --baseline $(BASELINE) --out pr_report.md --plots-dir dvc_plots/pr

# every test, the slow ones too (a bare `pytest` skips those: pyproject's addopts)
test: install
	$(BIN)/python -m pytest -m "slow or not slow"

# `dvc exp show` that fits a terminal: headline metrics always, other params and metrics only
# where the experiments differ, no dependency hashes (docs/experiments.md: Reading dvc exp show)
EXP_KEEP := ^(Experiment|Created|accuracy|macro_f1|mcc|validation_mean_main|heldout_after\.perplexity|reports/finetune/metrics\.json:best_step)$$
EXP_DROP := .*\.py$$|^data/|^models/|^tasks\.yaml$$

exp-show: install
	$(BIN)/dvc exp show --only-changed --keep '$(EXP_KEEP)' --drop '$(EXP_DROP)'

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV)
