# SimplePO: every target creates .venv when it is missing and installs the kit into it.
# CPU torch first (the wheel pinned below), then the package with its dev extra.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.simplepo-installed
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.ipynb))
# solutions after the lessons: they reuse the runs the lessons cached
SOLUTIONS := $(sort $(wildcard notebooks/solutions/*.ipynb))
export HF_HUB_OFFLINE ?= 1
export TRL_EXPERIMENTAL_SILENCE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: venv test unit notebooks-test browser-test lint run lab data bench clean-cache

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

## make test: lint, unit tests, notebooks executed by nbval, stripped-output check
test: venv lint unit notebooks-test

## make lint: ruff's linter and formatter check over the code and the notebooks' code cells
lint: venv
	$(BIN)/ruff check simplepo_helpers tests benchmarks browser notebooks
	$(BIN)/ruff format --check simplepo_helpers tests benchmarks browser notebooks

unit: venv
	$(BIN)/python -m pytest tests

notebooks-test: venv
ifneq ($(NOTEBOOKS),)
	$(BIN)/nbstripout --verify $(NOTEBOOKS) $(SOLUTIONS)
	$(BIN)/python -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider $(NOTEBOOKS) $(SOLUTIONS)
endif

## make browser-test: notebook 02's widget in JupyterLab + headless Chromium (Debian's /usr/bin/chromium)
browser-test: venv
	$(BIN)/python -m pytest -p no:cacheprovider browser/

## make run: execute every notebook headlessly into build/
run: venv
	$(BIN)/python -m simplepo_helpers.course.run_notebooks $(NOTEBOOKS)

## make lab: JupyterLab on notebooks/
lab: venv
	$(BIN)/jupyter lab notebooks/

## make data: rebuild data/ byte-identically and the cached reference model
data: venv
	$(BIN)/python -m simplepo_helpers.world.build

clean-cache:
	$(BIN)/python -c "import shutil, simplepo_helpers.world as w; shutil.rmtree(w.cache_dir(), ignore_errors=True); print('removed', w.cache_dir())"

## make bench: training-step speed and memory, kit vs TRL, on CPU; writes build/bench.json
bench: venv
	$(BIN)/python -m benchmarks.run
