"""The whole DAG end to end on a tiny twin of SEVIR, every rule in the container (through
the stand-in apptainer), then what the results carry and what a config change reruns.

One test function: the run takes most of the time and the checks share it (and so stay on
one pytest-xdist worker). The working directory and every configured folder contain spaces
(and the raw folder shell metacharacters): every path reaches the shell quoted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import xarray as xr
import yaml
from workflow_support import (
    container_calls,
    container_env,
    merge,
    planned_jobs,
    planned_runs,
    snakemake,
    tiny_config,
    write_config,
)

from stormfusion.models import get_model_class


def _provenance_ok(prov: dict[str, Any], fingerprint: str, config_hash: str) -> None:
    assert prov["data_fingerprint"] == fingerprint
    assert prov["config_hash"] == config_hash
    assert prov["git_commit"] and prov["package_version"]


#: Folders with spaces, and a raw folder whose name would run commands if unquoted.
PATHS = {
    "raw": "data/raw sevir $(touch INJECTED) `touch INJECTED`",
    "interim": "data/inter im",
    "results": "my results",
}


def _check_provenance(work: Path, config: dict, trained: set[str]) -> None:
    """Config (kept by its hash), data fingerprint and code version on every output."""
    results, runs = work / PATHS["results"], config["models"]
    events = json.loads((work / PATHS["interim"] / "events.json").read_text())
    fingerprint = events["data_fingerprint"]
    [snapshot] = (results / "configs").glob("*.yaml")
    config_hash = snapshot.stem
    kept = yaml.safe_load(snapshot.read_text())
    assert set(kept["models"]) == set(runs) and kept["synthetic"] == config["synthetic"]
    report = json.loads((results / "tables" / "report.json").read_text())
    _provenance_ok(report["provenance"], fingerprint, config_hash)
    for run in runs:
        score = json.loads((results / "scores" / f"{run}.json").read_text())
        _provenance_ok(score["provenance"]["scoring"], fingerprint, config_hash)
        with xr.open_zarr(results / "forecasts" / f"{run}.zarr", consolidated=False) as ds:
            prov = ds.attrs["provenance"]
            prov = json.loads(prov) if isinstance(prov, str) else prov
            _provenance_ok(prov, fingerprint, config_hash)
    for run in trained:
        ckpt = torch.load(results / "models" / run / "best.pt", weights_only=True)
        _provenance_ok(ckpt["provenance"], fingerprint, config_hash)


def test_tiny_dag_end_to_end_in_containers(tmp_path: Path) -> None:
    work = tmp_path / "work dir"
    # the stand-in apptainer and the image outside: Snakemake refuses image paths with spaces
    env, calls_log, image = container_env(tmp_path)
    config = tiny_config(container=str(image), paths=PATHS)
    write_config(work, config)
    runs = config["models"]
    trained = {name for name, spec in runs.items() if get_model_class(spec["model"]).trainable}

    proc = snakemake(
        work, "--cores", "2", "--use-singularity", "--apptainer-args=--nv", env=env, timeout=900
    )
    snakemake(work, "--cores", "1", "--report", "my results/report.html", env=env)
    assert not list(work.rglob("INJECTED")) and not list(Path.cwd().glob("INJECTED"))

    # every job ran in the configured image
    calls = container_calls(calls_log)
    executed = planned_jobs(proc.stdout + proc.stderr)
    assert len(calls) == sum(n for rule, n in executed.items() if rule != "all")
    assert {c["image"] for c in calls} == {str(image)}
    assert sum("stormfusion train " in c["command"] for c in calls) == len(trained)
    assert sum("stormfusion score " in c["command"] for c in calls) == len(runs)

    # the paper's tables, figures and the HTML report
    results = work / PATHS["results"]
    main = pd.read_csv(results / "tables" / "main.csv", comment="#")
    ablations = pd.read_csv(results / "tables" / "ablations.csv", comment="#")
    per_lead = pd.read_csv(results / "tables" / "per_lead.csv", comment="#")
    assert len(main) > 0 and len(ablations) > 0 and len(per_lead) > 0
    assert sorted(p.suffix for p in (results / "figures").iterdir()) and any(
        (results / "figures").glob("*.png")
    )
    assert (results / "report.html").stat().st_size > 10_000

    _check_provenance(work, config, trained)

    # nothing left to do; changing one run's settings reruns only that run and the report
    dry_run = ("--dry-run", "--use-singularity", "--apptainer-args=--nv")
    assert "Nothing to be done" in snakemake(work, *dry_run, env=env).stdout
    changed_run = "unet2d"
    widths = runs[changed_run]["args"]["widths"]  # a UNet run (ours or the seed's)
    changed = merge(
        config, {"models": {changed_run: {"args": {"widths": [w + 1 for w in widths]}}}}
    )
    write_config(work, changed)
    out = snakemake(work, *dry_run, env=env).stdout
    assert planned_jobs(out) == {
        "all": 1,
        "train_model": 1,
        "predict_model": 1,
        "score_model": 1,
        "make_report": 1,
    }
    for rule in ("train_model", "predict_model", "score_model"):
        assert planned_runs(out, rule) == {changed_run}
