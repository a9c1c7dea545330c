"""Fault injection: what an adversarial user or a hostile machine does to each step.

Every case here failed once (a command run from a config string, a file written outside
the configured folders, a traceback, a leftover temporary) and must now give one clear
error or the right result:

- shell injection through run names and paths, in a dry run and in a real run;
- a full disk, a read-only folder and a file where a folder should be, for every step that
  writes (a small tmpfs mounted by the test where the machine allows it, else a file-size
  limit and a folder without write permission);
- temporaries left by a killed run, an HDF5 file without ``id``, NaN flash times, a
  symbolic link leaving the data root, Ctrl-C while a step is still importing.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import zarr
from archive_twin import LGHT_FILE, RASTER_FILES, make_twin
from test_predict import predict_argv
from test_training_cli import train_argv
from workflow_support import REPO, merge, snakemake, tiny_config, write_config

from stormfusion.cli import main
from stormfusion.data.convert import convert_modality
from stormfusion.data.sevir import N_FRAMES
from stormfusion.errors import StormFusionError

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


# --- a full disk, a read-only folder, a file in the way: every writing step --------------


def _mount_tmpfs(where: Path, size: str = "2m") -> bool:
    """Mount a small tmpfs at ``where`` (root only); False where the machine does not allow."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    cmd = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)]
    return subprocess.run(cmd, capture_output=True, check=False).returncode == 0


def _fill(where: Path) -> None:
    """Write a filler file until the file system under ``where`` has no space left."""
    fd = os.open(where / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 65536)
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 512)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _file_size_limit(limit: int) -> Iterator[None]:
    """Fallback for a full disk: every write past ``limit`` bytes fails (EFBIG)."""
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, old_handler)


@contextlib.contextmanager
def _faulty_folder(tmp_path: Path, fault: str) -> Iterator[tuple[Path, tuple[str, ...]]]:
    """A folder where writing fails by ``fault``; yields it and the causes an error may name."""
    where = tmp_path / "faulty"
    mounted = _mount_tmpfs(where)
    try:
        if fault == "disk-full" and mounted:
            _fill(where)
            yield where, ("No space left on device",)
        elif fault == "disk-full":
            with _file_size_limit(0):
                yield where, ("File too large",)
        elif mounted:
            subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
            yield where, ("Read-only file system",)
        else:
            where.chmod(0o555)
            yield where, ("Permission denied",)
            where.chmod(0o755)
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture(scope="module")
def persistence_forecast(twin: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("forecast") / "persistence.zarr"
    assert main(predict_argv(twin, out)) == 0
    return out


#: step -> argv writing into a folder, from (inputs, folder); inputs as in `_inputs`.
STEPS: dict[str, Callable[[dict[str, Path], Path], list[str]]] = {
    "synthesize": lambda i, out: [
        "synthesize", "--out", str(out / "raw"), "--events", "2", "--random-events", "0",
        "--image-size", "16",
    ],
    "select-events": lambda i, out: [
        "select-events", "--catalog", str(i["raw"] / "CATALOG.csv"), "--data-root",
        str(i["raw"]), "--out", str(out / "events.csv"), "--meta", str(out / "events.json"),
    ],
    "convert": lambda i, out: [
        "convert", "--events", str(i["events"]), "--data-root", str(i["raw"]),
        "--modality", "vil", "--out", str(out / "vil.zarr"), "--workers", "1",
    ],
    "split": lambda i, out: [
        "split", "--events", str(i["events"]), "--out", str(out / "windows.csv"),
    ],
    "train": lambda i, out: train_argv(i, out / "run", epochs=1),
    "predict": lambda i, out: predict_argv(i, out / "persistence.zarr"),
    "score": lambda i, out: [
        "score", "--forecast", str(i["forecast"]), "--truth", str(i["zarr"] / "vil.zarr"),
        "--windows", str(i["windows"]), "--out-csv", str(out / "run.csv"),
        "--out-json", str(out / "run.json"), "--out-counts", str(out / "run.counts.npz"),
    ],
}  # fmt: skip


@pytest.fixture
def inputs(
    synthetic_archive: Path,
    event_index: Path,
    twin: dict[str, Path],
    persistence_forecast: Path,
) -> dict[str, Path]:
    return {
        **twin,
        "raw": synthetic_archive,
        "events": event_index,
        "forecast": persistence_forecast,
    }


def _leftovers(where: Path) -> list[str]:
    return sorted(p.name for p in where.rglob("*") if ".tmp-" in p.name)


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["disk-full", "read-only"])
@pytest.mark.parametrize("step", sorted(STEPS))
def test_an_unwritable_output_is_one_line_naming_path_and_cause(
    tmp_path: Path,
    inputs: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    step: str,
    fault: str,
) -> None:
    capsys.readouterr()
    with _faulty_folder(tmp_path, fault) as (where, causes):
        rc = main(STEPS[step](inputs, where))
        left = _leftovers(where)
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"stormfusion {step}: error: {where}"), err
    assert any(cause in last for cause in causes), err
    assert left == []


@pytest.mark.parametrize("step", ["split", "convert"])
def test_a_file_where_a_folder_should_be_is_one_line(
    tmp_path: Path, inputs: dict[str, Path], capsys: pytest.CaptureFixture[str], step: str
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder\n")
    capsys.readouterr()
    assert main(STEPS[step](inputs, blocker / "sub")) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"stormfusion {step}: error: {blocker}")
    assert blocker.read_text() == "a file, not a folder\n"
