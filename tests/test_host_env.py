"""A host that only plans: Snakemake and this package's light dependencies, no torch.

Under `--use-singularity` every step runs in the image; the host only builds the DAG. These
tests build such an environment (a fresh venv with `snakemake` and the package installed
with `--no-deps`, versions from envs/constraints.txt) and dry-run the study and the
published-protocol preset from it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from workflow_support import (
    REPO,
    SNAKEFILE,
    install_standin_apptainer,
    load_yaml,
    merge,
    planned_jobs,
    study_config,
    write_config,
)

from stormfusion.model_names import TRAINABLE

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def host_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a venv holding Snakemake and the package (without its dependencies)."""
    root = tmp_path_factory.mktemp("host")
    subprocess.run([sys.executable, "-m", "venv", root / "venv"], check=True, timeout=300)
    python = root / "venv" / "bin" / "python"
    pip = [python, "-m", "pip", "install", "--quiet", "-c", REPO / "envs" / "constraints.txt"]
    subprocess.run([*pip, "snakemake"], check=True, timeout=1200)
    src = root / "src"  # a copy, so that building the wheel leaves the checkout untouched
    shutil.copytree(REPO / "stormfusion", src / "stormfusion")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    subprocess.run([*pip, "--no-deps", src], check=True, timeout=600)
    return python.parent


def _env(host_bin: Path, work: Path) -> dict[str, str]:
    standin = install_standin_apptainer(work / "standin-bin")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = os.pathsep.join([str(host_bin), str(standin), "/usr/bin", "/bin"])
    return env


def _runs(config: dict[str, Any]) -> dict[str, Any]:
    """The runs that take part (an overlay drops runs with `enabled: false`)."""
    return {r: spec for r, spec in config["models"].items() if spec.get("enabled", True)}


def _dry_run(host_bin: Path, work: Path, *args: str) -> dict[str, int]:
    proc = subprocess.run(
        [host_bin / "snakemake", "-n", "--snakefile", SNAKEFILE, "--directory", work, *args],
        cwd=work,
        env=_env(host_bin, work),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return planned_jobs(proc.stdout)


def test_the_host_environment_has_no_torch(host_bin: Path) -> None:
    probe = "import importlib.util as u, stormfusion.model_names; print(u.find_spec('torch'))"
    out = subprocess.run(
        [host_bin / "python", "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=host_bin,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == "None"


def test_host_without_torch_dry_runs_the_study(host_bin: Path, tmp_path: Path) -> None:
    config = study_config()
    write_config(tmp_path, config)
    jobs = _dry_run(host_bin, tmp_path, "--cores", "8", "--use-singularity")
    trained = [r for r, spec in _runs(config).items() if TRAINABLE[spec["model"]]]
    assert jobs["train_model"] == len(trained) > 0
    assert jobs["predict_model"] == jobs["score_model"] == len(_runs(config))
    assert jobs["download_sevir"] == jobs["make_report"] == 1


def test_host_without_torch_dry_runs_the_sevir_protocol(host_bin: Path, tmp_path: Path) -> None:
    preset = REPO / "config" / "protocols" / "sevir.yaml"
    config = merge(study_config(), load_yaml(preset))
    write_config(tmp_path, study_config())
    jobs = _dry_run(host_bin, tmp_path, "--cores", "8", "--configfile", str(preset))
    trained = [r for r, spec in _runs(config).items() if TRAINABLE[spec["model"]]]
    assert jobs["train_model"] == len(trained) > 0
    assert jobs["score_model"] == len(_runs(config))
