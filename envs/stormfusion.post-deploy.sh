#!/usr/bin/env bash
# Run by Snakemake (--use-conda) inside the freshly created envs/stormfusion.yaml
# environment: installs this package (its `stormfusion` command) without touching the
# pinned deps, then the LPIPS weights scoring reads.
# Snakemake runs it from the workflow's working directory; set STORMFUSION_SRC to the
# repository when running with --directory elsewhere.
set -euo pipefail
src="${STORMFUSION_SRC:-$PWD}"
if [ ! -f "$src/pyproject.toml" ]; then
  echo "post-deploy: $src has no pyproject.toml; set STORMFUSION_SRC to the repository" >&2
  exit 1
fi
python -m pip install --no-deps -c "$src/envs/constraints.txt" -e "$src"
stormfusion lpips-weights  # the LPIPS weights, converted offline as `make setup` does
