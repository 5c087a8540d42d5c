# SimplePO: every target creates .venv when it is missing and installs the kit into it.
# Torch first (the version pinned below), then the package with its dev extra (learn extra + test tooling).
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
# An extra index for torch: PyTorch's CPU wheels, so Linux gets torch==X+cpu (about 200 MB) rather than
# PyPI's CUDA build (several GB); macOS and Windows wheels are CPU builds either way. Where that index is
# unreachable (no network beyond PyPI) it is left out, so pip does not retry it for every dependency and
# takes torch from its other indexes (or a local wheel). For a CUDA build: make venv TORCH_INDEX=
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
TORCH_INDEX ?= $(shell $(PYTHON) -c "import urllib.request as r; r.urlopen('$(TORCH_CPU_INDEX)/', timeout=5); print('$(TORCH_CPU_INDEX)')" 2>/dev/null)
BIN := $(VENV)/bin
STAMP := $(VENV)/.simplepo-installed
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.ipynb))
# solutions after the lessons: they reuse the runs the lessons cached
SOLUTIONS := $(sort $(wildcard notebooks/solutions/*.ipynb))
export HF_HUB_OFFLINE ?= 1
export TRL_EXPERIMENTAL_SILENCE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: colab-links widgets7-test floors-test venv test unit notebooks-test browser-test lint run lab data reference reference-ship round1-pairs bench clean-cache

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

## make test: lint, unit tests, notebooks executed by nbval, stripped-output check
test: venv lint unit notebooks-test

## make lint: ruff's linter and formatter check over the code and the notebooks' code cells; mypy over the
## core, fast/ and runtime/ (the files in pyproject.toml's [tool.mypy])
lint: venv
	$(BIN)/ruff check simplepo_helpers tests benchmarks browser notebooks
	$(BIN)/ruff format --check simplepo_helpers tests benchmarks browser notebooks
	$(BIN)/mypy

## make unit: the unit tests, with the package's line coverage printed at the end
unit: venv
	$(BIN)/python -m pytest --cov=simplepo_helpers --cov-report=term:skip-covered tests

notebooks-test: venv
ifneq ($(NOTEBOOKS),)
	$(BIN)/nbstripout --verify $(NOTEBOOKS) $(SOLUTIONS)
	$(BIN)/python -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider $(NOTEBOOKS) $(SOLUTIONS)
endif

## make wheel-check: build the wheel, install it into a fresh venv that borrows the project venv's dependencies
## (nothing of the checkout on the path), then run notebook 01's loading path and a 5-step train() from outside
## the clone (.ci/wheel_smoke.py): the data files, the shipped model and round 1's pairs must come with it
WHEEL_DIR := build/wheel-check
.PHONY: wheel-check
wheel-check: venv
	rm -rf $(WHEEL_DIR) build/lib build/bdist.*
	$(BIN)/python -m pip wheel --quiet --no-deps --no-build-isolation -w $(WHEEL_DIR) .
	$(BIN)/python -m venv $(WHEEL_DIR)/venv
	$(BIN)/python -c "import site; print(site.getsitepackages()[0])" > \
	  "$$($(WHEEL_DIR)/venv/bin/python -c 'import site; print(site.getsitepackages()[0])')/project-deps.pth"
	$(WHEEL_DIR)/venv/bin/python -m pip install --quiet --no-deps --no-index $(WHEEL_DIR)/*.whl
	cd "$$(mktemp -d)" && SIMPLEPO_CACHE="$$(mktemp -d)" $(CURDIR)/$(WHEEL_DIR)/venv/bin/python \
	  $(CURDIR)/.ci/wheel_smoke.py $(CURDIR)

## make browser-test: notebook 02's widget in JupyterLab + headless Chromium (Debian's /usr/bin/chromium)
browser-test: venv
	$(BIN)/python -m pip install --quiet -e ".[browser]"
	$(BIN)/python -m pytest -p no:cacheprovider browser/

## make run: execute every notebook headlessly into build/
run: venv
	$(BIN)/python -m simplepo_helpers.course.run_notebooks $(NOTEBOOKS)

## make lab: JupyterLab on notebooks/
lab: venv
	$(BIN)/jupyter lab notebooks/

## make data: rebuild data/ byte-identically (the reference model is shipped, not rebuilt here)
data: venv
	$(BIN)/python -m simplepo_helpers.world.build

## make reference SEED=N: build the world's reference model into the cache (1-2 minutes). On another CPU the
## same recipe rounds differently: another model of the shipped one's quality, never written over it.
SEED ?= 0
reference: venv
	$(BIN)/python -m simplepo_helpers.world.build --reference --seed $(SEED)

## make round1-pairs: (maintainers) simplepo_helpers/world/onpolicy_round1.jsonl, round 1's on-policy pairs sampled from the
## shipped reference (after reference-ship); shipped because sampling rounds differently on other CPUs
round1-pairs: venv
	$(BIN)/python -m simplepo_helpers.experiments.rounds

## make reference-ship: (maintainers) build with SEED and replace the shipped model; every record must follow
reference-ship: venv
	$(BIN)/python -m simplepo_helpers.world.build --reference --seed $(SEED) --ship

clean-cache:
	$(BIN)/python -c "import shutil, simplepo_helpers.world as w; shutil.rmtree(w.cache_dir(), ignore_errors=True); print('removed', w.cache_dir())"

## make bench: training-step speed and memory, kit vs TRL, on CPU; writes build/bench.json
bench: venv
	$(BIN)/python -m benchmarks.run

## make colab-links: point every notebook's Colab badge and setup-cell clone at colab.toml's repository and tag
colab-links: venv
	$(BIN)/python -m simplepo_helpers.course.colab

## make widgets7-test: the widgets' Python side under ipywidgets 7.7 (what Colab ships), from a --target folder
IPYWIDGETS7 := build/ipywidgets7
widgets7-test: venv
	rm -rf $(IPYWIDGETS7)
	$(BIN)/python -m pip install --quiet --no-deps --target $(IPYWIDGETS7) "ipywidgets==7.7.*" "widgetsnbextension==3.6.*" ipython_genutils
	PYTHONPATH=$(IPYWIDGETS7) SIMPLEPO_IPYWIDGETS_MAJOR=7 $(BIN)/python -m pytest -p no:cacheprovider \
		tests/test_widgets_ipywidgets7.py tests/test_notebook_utils.py tests/test_evaluation.py \
		-k "ipywidgets or tqdm or browser or explorer or curves"

## make floors-test: the unit tests against the oldest declared dependency versions (.ci/floors.txt), own venv
FLOORS_VENV := build/floors-venv
FLOORS_TESTS ?= tests/test_losses.py tests/test_logps.py tests/test_batching.py tests/test_data.py \
	tests/test_jsonl_defects.py tests/test_training.py tests/test_checkpoint.py tests/test_cli.py \
	tests/test_trl_equivalence.py tests/test_trl_handoff.py tests/test_trackers.py tests/test_lora.py \
	tests/test_widgets_ipywidgets7.py tests/test_notebook_utils.py \
	-k "not run_notebooks and not test_matches_trl_tokenisation"  # that test sets a TrainingArguments name newer than 5.0
floors-test:
	rm -rf $(FLOORS_VENV)
	$(PYTHON) -m venv $(FLOORS_VENV)
	$(FLOORS_VENV)/bin/python -m pip install --quiet $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) "$(TORCH)"
	$(FLOORS_VENV)/bin/python -m pip install --quiet -r .ci/floors.txt
	SIMPLEPO_IPYWIDGETS_MAJOR=7 $(FLOORS_VENV)/bin/python -m pytest -p no:cacheprovider $(FLOORS_TESTS)

## make experiments: the offline sweeps behind the defaults and the results (tuning on dev, gamma, KL penalty,
## on-policy pairs, final runs on eval) into results/, one process per core (WORKERS), resumable; then the
## tables (results/experiments.json, build/results.json, the README's results section). Not part of CI.
WORKERS ?= 2
.PHONY: experiments report
experiments: venv
	$(BIN)/python -m simplepo_helpers.experiments.sweeps --workers $(WORKERS)
	$(BIN)/python -m simplepo_helpers.experiments.report --readme README.md

## make report: only the tables, from the committed records in results/
report: venv
	$(BIN)/python -m simplepo_helpers.experiments.report --readme README.md

## make spread: the default recipe's records (results/rounds.jsonl, resumable): the search on dev that chose it,
## then the spread (default SimPO over 16 seeds from the shipped reference and 4 seeds from each of two rebuilt
## references, DPO and the offline recipes over 8 seeds), then the README's spread block. Not part of CI.
.PHONY: spread
spread: venv
	$(BIN)/python -m simplepo_helpers.experiments.spread search --workers $(WORKERS)
	$(BIN)/python -m simplepo_helpers.experiments.spread spread --workers $(WORKERS)
	$(BIN)/python -m simplepo_helpers.experiments.spread report --readme README.md

## make bench-gpu: the prepared GPU benchmark (benchmarks/bench_gpu.py): notebook 03's gpu profile for a few steps on
## stand-in weights of SmolLM2-135M's shape, then the SmolLM2-shaped rows in bf16 (pairs/s, peak memory, MFU against
## the datasheet peak) into build/bench_gpu.json. Uses the machine's own python, torch and transformers (no venv);
## TRL rows run only where trl and datasets are installed. Offline. BENCH_GPU_ARGS=--smoke: a tiny CPU check.
BENCH_GPU_PYTHON ?= $(PYTHON)
.PHONY: bench-gpu
bench-gpu:
	PYTHONPATH=$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH} $(BENCH_GPU_PYTHON) -m benchmarks.bench_gpu --out build/bench_gpu.json $(BENCH_GPU_ARGS)
