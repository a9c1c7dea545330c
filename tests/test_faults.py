"""Fault injection: what an adversarial user or a hostile machine does to each step.

Every case here failed once (a command run from a config string, a file written outside
the configured folders, a traceback, a leftover temporary) and must now give one clear
error or the right result:

- shell injection through run names and paths, in a dry run and in a real run;
- ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from workflow_support import merge, snakemake, tiny_config, write_config

#: Shell payloads: each would create a file named INJECTED* if a shell ever ran it.
PAYLOAD = "$(touch INJECTED1) `touch INJECTED2`; touch INJECTED3"


def _injected(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob("INJECTED*")]


def _vil_only(**overrides: Any) -> dict[str, Any]:
    """The tiny twin with the VIL modality only and the persistence run: the cheapest DAG."""
    config = tiny_config(selection={"modalities": ["vil"]}, **overrides)
    config["models"] = {"persistence": {"model": "persistence"}}
    return config


# --- injection and escape through the config ---------------------------------------------


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "real-run"])
@pytest.mark.parametrize(
    "run", [f"x{PAYLOAD}", "../../outside/escaped", "ok\ntouch INJECTED4"], ids=repr
)
def test_a_hostile_run_name_is_refused_and_runs_nothing(
    tmp_path: Path, run: str, dry_run: bool
) -> None:
    work = tmp_path / "work"
    config = _vil_only()
    config["models"][run] = {"model": "persistence"}
    write_config(work, config)
    target = f"results/forecasts/{run}.zarr"
    args = ("--dry-run",) if dry_run else ()
    proc = snakemake(work, *args, "--cores", "1", target, check=False)

    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "ValidationError" in out and repr(run)[1:-1][:12] in out
    assert not _injected(tmp_path)
    assert not (tmp_path / "outside").exists()
    assert not (work / "results").exists() and not (work / "data").exists()


@pytest.mark.parametrize("key", ["raw", "interim", "results"])
def test_a_folder_leaving_its_root_is_refused(tmp_path: Path, key: str) -> None:
    work = tmp_path / "deep" / "work"
    write_config(work, merge(_vil_only(), {"paths": {key: "../../outside"}}))
    proc = snakemake(work, "--cores", "1", check=False)
    assert proc.returncode != 0
    assert "ValidationError" in proc.stdout + proc.stderr
    assert "../../outside" in proc.stdout + proc.stderr
    assert not (tmp_path / "outside").exists()


def test_shell_characters_in_paths_are_data_not_commands(tmp_path: Path) -> None:
    """Backticks, `$(...)`, `;` and spaces in a configured folder reach the step as one
    argument, in a dry run and a real run: the folder is made under its literal name."""
    work = tmp_path / "work dir"
    raw = f"data/raw {PAYLOAD}"
    write_config(work, _vil_only(paths={"raw": raw, "results": "my results"}))
    target = f"{raw}/CATALOG.csv"

    dry = snakemake(work, "--dry-run", "--printshellcmds", "--cores", "1", target).stdout
    assert "stormfusion synthesize --out 'data/raw $(touch INJECTED1)" in dry
    assert not _injected(tmp_path)

    snakemake(work, "--cores", "1", target)
    assert (work / raw / "CATALOG.csv").is_file()
    assert (work / raw / "synthetic_manifest.json").is_file()
    assert (work / "my results" / "logs" / "synthesize_sevir.log").is_file()
    assert not _injected(tmp_path)
