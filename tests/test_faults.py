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
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import zarr
from archive_twin import LGHT_FILE, RASTER_FILES, make_twin
from training_support import predict_argv, train_argv
from workflow_support import REPO, merge, snakemake, tiny_config, write_config

from stormfusion.cli import COMMANDS, main
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
def _faulty_folder(
    tmp_path: Path, fault: str, prepare: Callable[[Path], None] | None = None
) -> Iterator[tuple[Path, tuple[str, ...]]]:
    """A folder where writing fails by ``fault`` (after ``prepare`` has written into it
    what the step reads there); yields it and the causes an error may name."""
    where = tmp_path / "faulty"
    mounted = _mount_tmpfs(where)
    try:
        if prepare is not None:
            prepare(where)
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


def _one_line_naming(err: str, rc: int, step: str, where: Path, causes: tuple[str, ...]) -> None:
    """Exit 1 and, last on stderr, one line naming the folder and one of ``causes``."""
    assert rc == 1, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"stormfusion {step}: error: {where}"), err
    assert any(cause in last for cause in causes), err


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
    _one_line_naming(capsys.readouterr().err, rc, step, where, causes)
    assert left == []


@pytest.fixture(scope="module")
def persistence_scores(
    twin: dict[str, Path], persistence_forecast: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """RESULTS/scores of the persistence run (what the report reads besides forecasts)."""
    scores = tmp_path_factory.mktemp("results") / "scores"
    scores.mkdir()
    argv = STEPS["score"]({**twin, "forecast": persistence_forecast}, scores)
    assert main(argv) == 0
    for ext in ("csv", "json", "counts.npz"):
        (scores / f"run.{ext}").rename(scores / f"persistence.{ext}")
    return scores


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["disk-full", "read-only"])
def test_a_report_into_an_unwritable_results_folder_is_one_line(
    tmp_path: Path,
    inputs: dict[str, Path],
    persistence_scores: Path,
    capsys: pytest.CaptureFixture[str],
    fault: str,
) -> None:
    """The report step, whose inputs (scores, forecasts) live in the folder it writes."""

    def prepare(results: Path) -> None:
        shutil.copytree(persistence_scores, results / "scores")
        (results / "forecasts").mkdir()
        (results / "forecasts" / "persistence.zarr").symlink_to(inputs["forecast"])

    runs = {"persistence": {"model": "persistence", "args": {}, "trainable": False}}
    capsys.readouterr()
    with _faulty_folder(tmp_path, fault, prepare) as (where, causes):
        rc = main([
            "report", "--runs", json.dumps(runs), "--results", str(where),
            "--zarr-dir", str(inputs["zarr"]), "--windows", str(inputs["windows"]),
            "--events-meta", str(inputs["meta"]),
            "--config-hash", "cfg0", "--bootstrap", "0",
        ])  # fmt: skip
        left = _leftovers(where)
        written = sorted(p.name for p in where.rglob("*") if p.parent.name in ("tables", "figures"))
    _one_line_naming(capsys.readouterr().err, rc, "report", where, causes)
    assert left == [] and written == []


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


# --- leftovers of a killed run ------------------------------------------------------------


def _dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_convert_leaves_temporaries_that_the_next_run_removes(tmp_path: Path) -> None:
    """A convert killed with SIGKILL mid-write leaves `.vil.zarr.tmp-*`; the next run of the
    same output removes it (a live writer's temporary and other outputs' are kept)."""
    twin = make_twin(tmp_path / "raw", n_events=3, size=16)
    out = tmp_path / "zarr" / "vil.zarr"
    script = (
        "import os, signal, sys\n"
        "import stormfusion.data.convert as c\n"
        "read = c.read_event_frames\n"
        "def kill_on_second(*a, _n=[0]):\n"
        "    _n[0] += 1\n"
        "    if _n[0] == 2:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return read(*a)\n"
        "c.read_event_frames = kill_on_second\n"
        "c.convert_modality(sys.argv[1], sys.argv[2], 'vil', sys.argv[3], workers=1)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    killed = subprocess.run(
        [sys.executable, "-c", script, str(twin.events_csv), str(twin.root), str(out)],
        env=env,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL
    [stale] = out.parent.glob(".vil.zarr.tmp-*")
    assert stale.is_dir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = out.parent / f".vil.zarr.tmp-{sleeper.pid}-0123abcd"
        live.mkdir()
        other = out.parent / f".ir069.zarr.tmp-{_dead_pid()}-0123abcd"
        other.mkdir()
        convert_modality(twin.events_csv, twin.root, "vil", out, verify_events=3)
        assert not stale.exists()
        assert live.is_dir() and other.is_dir()
    finally:
        sleeper.kill()
        sleeper.wait()
    stored = zarr.open_array(out / "vil", mode="r")
    assert np.array_equal(stored[0], np.moveaxis(twin.rasters["vil"][0], -1, 0))


def test_predict_removes_a_stale_temporary_of_its_store(
    tmp_path: Path, inputs: dict[str, Path]
) -> None:
    out = tmp_path / "forecasts" / "persistence.zarr"
    out.parent.mkdir()
    stale = out.parent / f".persistence.zarr.tmp-{_dead_pid()}-89abcdef"
    (stale / "chunk").mkdir(parents=True)
    assert main(STEPS["predict"](inputs, out.parent)) == 0
    assert not stale.exists() and out.is_dir()


# --- bad input: HDF5 without id, NaN flash times, a link leaving the data root -----------


def test_a_raster_file_without_id_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    twin = make_twin(tmp_path, n_events=2, size=16)
    h5 = tmp_path / "data" / RASTER_FILES["vil"]
    with h5py.File(h5, "a") as f:
        del f["id"]
    out = tmp_path / "vil.zarr"
    argv = ["convert", "--events", str(twin.events_csv), "--data-root", str(tmp_path)]
    assert main([*argv, "--modality", "vil", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    assert str(h5) in err and "no 'id' dataset" in err
    assert not out.exists() and not list(tmp_path.glob(".vil.zarr.tmp-*"))


def test_flashes_with_nan_times_are_dropped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Three flashes at known places and times plus two with a NaN time and one with a NaN
    position: the grid counts the three, by hand, and the log says two... three dropped."""
    twin = make_twin(tmp_path, n_events=2, size=16)
    event = twin.ids[1]
    nan = np.nan
    flashes = np.array(
        [
            [-7200.0, 0, 0, 0.5, 0.5],  # -120 min: frame 0, pixel (0, 0)
            [0.0, 0, 0, 1.2, 0.7],  # 0 min: frame 24, x 1, y 0
            [7199.0, 0, 0, 1.9, 1.1],  # 119.98 min: frame 47, x 1, y 1
            [nan, 0, 0, 0.5, 0.5],  # SEVIR's binning would count these in frame 48
            [nan, 0, 0, 1.5, 1.5],
            [60.0, 0, 0, nan, 0.5],
        ]
    )
    with h5py.File(tmp_path / "data" / LGHT_FILE, "a") as f:
        del f[event]
        f.create_dataset(event, data=flashes.astype(np.float32))
    out = tmp_path / "lght.zarr"
    with caplog.at_level("WARNING"):
        convert_modality(twin.events_csv, tmp_path, "lght", out, verify_events=0)
    grid = zarr.open_array(out / "lght", mode="r")[1]  # (49, y, x)
    expected = np.zeros((N_FRAMES, 2, 2), dtype=np.int32)
    expected[0, 0, 0] = expected[24, 0, 1] = expected[47, 1, 1] = 1
    assert np.array_equal(grid, expected)
    assert grid[48].sum() == 0
    [warning] = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert f"dropped 3 of 6 flashes of event {event}" in warning


def test_a_link_leaving_the_data_root_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    twin = make_twin(tmp_path / "root", n_events=2, size=16)
    inside = tmp_path / "root" / "data" / RASTER_FILES["vil"]
    outside = tmp_path / "elsewhere" / inside.name
    outside.parent.mkdir()
    inside.rename(outside)
    inside.symlink_to(outside)
    out = tmp_path / "vil.zarr"
    with pytest.raises(StormFusionError, match="outside the data root"):
        convert_modality(twin.events_csv, twin.root, "vil", out)
    assert not out.exists()
    # a link that stays inside the root is followed
    moved = tmp_path / "root" / "data" / "moved.h5"
    outside.rename(moved)
    inside.unlink()
    inside.symlink_to(moved)
    convert_modality(twin.events_csv, twin.root, "vil", out, verify_events=2)
    assert zarr.open_array(out / "vil", mode="r").shape == (2, N_FRAMES, 16, 16)


def test_the_data_root_itself_may_be_a_link(tmp_path: Path) -> None:
    twin = make_twin(tmp_path / "real", n_events=2, size=16)
    link = tmp_path / "root-link"
    link.symlink_to(twin.root)
    out = tmp_path / "vil.zarr"
    convert_modality(twin.events_csv, link, "vil", out, verify_events=2)
    assert out.is_dir()


# --- Ctrl-C and SIGTERM -------------------------------------------------------------------

#: Sends SIGINT to itself 0.2 s into `stormfusion train --help`, while the step's modules
#: (torch) are still importing.
_INTERRUPT_AT_IMPORT = """
import os, signal, sys, threading
from stormfusion.cli import COMMANDS, main
threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
sys.exit(main(["train", "--help"]))
"""


def test_ctrl_c_while_a_step_imports_is_one_line() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", _INTERRUPT_AT_IMPORT],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr == "stormfusion train: interrupted\n"
    assert "usage" not in proc.stdout  # it was interrupted before parsing


def test_sigterm_ends_a_step_and_removes_its_temporary(tmp_path: Path) -> None:
    """SIGTERM (what Snakemake and SLURM send) while convert writes: exit 143, one line, no
    temporary left behind."""
    twin = make_twin(tmp_path / "raw", n_events=3, size=16)
    out = tmp_path / "zarr" / "vil.zarr"
    script = (
        "import sys, time\n"
        "import stormfusion.data.convert as c\n"
        "from stormfusion.cli import main\n"
        "read = c.read_event_frames\n"
        "def slow(*a):\n"
        "    time.sleep(1)\n"
        "    return read(*a)\n"
        "c.read_event_frames = slow\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    argv = ["convert", "--events", str(twin.events_csv), "--data-root", str(twin.root)]
    argv += ["--modality", "vil", "--out", str(out), "--workers", "1"]
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *argv],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not list(out.parent.glob(".vil.zarr.tmp-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "stormfusion convert: terminated", err
    assert "Traceback" not in err
    assert not out.exists() and not list(out.parent.glob(".vil.zarr.tmp-*"))


#: convert, terminated while one of its main-thread frames holds a coroutine it has not
#: awaited yet (as zarr's synchronous calls do when SIGTERM lands between making the
#: coroutine and handing it to zarr's event loop).
_TERMINATED_MID_CALL = """
import os, signal, sys, time
import stormfusion.data.convert as c
from stormfusion.cli import main
async def work():
    return None
def compute(graph, workers):
    pending = work()
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(60)
c._compute = compute
sys.exit(main(sys.argv[1:]))
"""


def test_a_step_terminated_mid_call_prints_only_its_line(tmp_path: Path) -> None:
    twin = make_twin(tmp_path / "raw", n_events=2, size=16)
    out = tmp_path / "zarr" / "vil.zarr"
    argv = ["convert", "--events", str(twin.events_csv), "--data-root", str(twin.root)]
    argv += ["--modality", "vil", "--out", str(out), "--workers", "1"]
    proc = subprocess.run(
        [sys.executable, "-c", _TERMINATED_MID_CALL, *argv],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 143, proc.stderr
    tail = proc.stderr.split("stormfusion convert: terminated\n", 1)
    assert len(tail) == 2 and tail[1] == "", proc.stderr  # nothing after the line
    assert "never awaited" not in proc.stderr


def test_the_config_hash_option_reaches_provenance(
    tmp_path: Path, inputs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workflow hands each step its config hash as `--config-hash` (no environment
    variable): it lands in the output's provenance."""
    monkeypatch.delenv("STORMFUSION_CONFIG_HASH", raising=False)
    out = tmp_path / "persistence.zarr"
    assert main([*predict_argv(inputs, out), "--config-hash", "cfg0123abcd"]) == 0
    attrs = zarr.open_group(out, mode="r").attrs
    prov = attrs["provenance"]
    prov = json.loads(prov) if isinstance(prov, str) else prov
    assert prov["config_hash"] == "cfg0123abcd"


@pytest.mark.parametrize("step", sorted(COMMANDS))
def test_every_step_takes_the_config_hash(step: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([step, "--help"])
    assert "--config-hash" in capsys.readouterr().out
