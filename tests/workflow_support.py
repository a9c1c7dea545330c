"""Helpers for the workflow tests: a private working directory per test, the tiny twin's
config, and a `snakemake` runner that uses this repository's Snakefile.

Every test runs `snakemake -s REPO/Snakefile --directory WORK` with its own WORK under
tmp_path, so runs never collide with each other or with the demo. WORK/config.yaml is the
whole config of the run (the Snakefile's `configfile:` resolves in the working directory).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from stormfusion.provenance import VERSION_PROBE

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
VENV_BIN = Path(sys.executable).parent

#: Every rule of the study, in DAG order.
STUDY_RULES = (
    "download_catalog",
    "plan_download",
    "download_sevir",
    "select_events",
    "convert_to_zarr",
    "split_events",
    "train_model",
    "predict_model",
    "score_model",
    "make_report",
)


def merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """Key-by-key merge of nested mappings, as Snakemake merges --configfile overlays."""
    out = copy.deepcopy(dict(base))
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_yaml(path: Path) -> dict[str, Any]:
    with path.open() as fh:
        return yaml.safe_load(fh) or {}


def study_config() -> dict[str, Any]:
    return load_yaml(REPO / "config.yaml")


def demo_config() -> dict[str, Any]:
    """config.yaml overlaid with config/demo.yaml, as `make demo` sees it."""
    return merge(study_config(), load_yaml(REPO / "config" / "demo.yaml"))


#: The runs of the tiny DAG (the demo runs every model): baselines, a CNN, the SGT and one
#: ablation, with the demo's settings.
TINY_RUNS = ("persistence", "optical_flow", "unet2d", "sgt", "sgt_no_gnn")


def tiny_config(**overrides: Any) -> dict[str, Any]:
    """The demo's config shrunk by tests/data/tiny.yaml and cut to TINY_RUNS, then
    ``overrides`` (top-level keys)."""
    config = merge(demo_config(), load_yaml(REPO / "tests" / "data" / "tiny.yaml"))
    config["models"] = {run: config["models"][run] for run in TINY_RUNS}
    return merge(config, overrides)


def write_config(work: Path, config: Mapping[str, Any]) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    return path


def tool_env(work: Path, extra_path: Sequence[Path] = ()) -> dict[str, str]:
    """Environment for a workflow run: the venv's tools on PATH, and a `stormfusion` command.

    Where the package is installed (``make setup``), the venv has the console script. In a
    checkout used without installing, a two-line launcher in WORK/bin runs
    ``python -m stormfusion`` with the repository on PYTHONPATH.
    """
    env = dict(os.environ)
    paths = [str(p) for p in extra_path]
    if not (VENV_BIN / "stormfusion").exists():
        bindir = work / "bin"
        bindir.mkdir(parents=True, exist_ok=True)
        launcher = bindir / "stormfusion"
        launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m stormfusion "$@"\n')
        launcher.chmod(0o755)
        paths.append(str(bindir))
    paths += [str(VENV_BIN), env.get("PATH", "")]
    env["PATH"] = os.pathsep.join(paths)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env.setdefault("MPLBACKEND", "Agg")
    env["OMP_NUM_THREADS"] = "1"
    return env


def snakemake(
    work: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
    check: bool = True,
    wrapper: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """Run Snakemake on this repository's Snakefile in ``work``; output captured as text."""
    cmd = [
        *wrapper,
        str(VENV_BIN / "snakemake"),
        "--snakefile",
        str(SNAKEFILE),
        "--directory",
        str(work),
        *args,
    ]
    proc = subprocess.run(
        cmd,
        cwd=work,
        env=dict(env) if env is not None else tool_env(work),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n"
            f"{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}\n{failed_logs(work)}"
        )
    return proc


def failed_logs(work: Path, limit: int = 4000) -> str:
    """Tails of the rule logs (RESULTS/logs under WORK), to explain a failure."""
    parts = []
    for log in sorted(work.glob("**/logs/**/*.log")):
        text = log.read_text(errors="replace")
        if "Error" in text or "error" in text:
            parts.append(f"--- {log.relative_to(work)}\n{text[-limit:]}")
    return "\n".join(parts)


def planned_jobs(dry_run_stdout: str) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table of a dry run."""
    counts: dict[str, int] = {}
    lines = dry_run_stdout.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("Job stats"))
    except StopIteration:
        return counts
    for line in lines[start + 3 :]:
        fields = line.split()
        if len(fields) != 2 or not fields[1].isdigit():
            break
        if fields[0] != "total":
            counts[fields[0]] = int(fields[1])
    return counts


def planned_runs(dry_run_stdout: str, rule: str) -> set[str]:
    """The `run` wildcard values of a rule's jobs in a dry run's job listing."""
    runs: set[str] = set()
    current = None
    for line in dry_run_stdout.splitlines():
        stripped = line.strip()
        if stripped.startswith("rule ") or stripped.startswith("localrule "):
            current = stripped.split()[1].rstrip(":")
        elif current == rule and stripped.startswith("wildcards:"):
            for item in stripped[len("wildcards:") :].split(","):
                key, _, value = item.strip().partition("=")
                if key == "run":
                    runs.add(value)
    return runs


#: The stand-in `apptainer` / `singularity`: records each call as one JSON line in
#: $APPTAINER_STANDIN_LOG and runs the command on the host. Snakemake calls
#: `apptainer [--quiet --silent] exec --home DIR [ARGS...] IMAGE SHELL -c CMD`; a multi-node
#: training job's srun calls `apptainer exec [ARGS...] IMAGE COMMAND [ARGS...]`.
STANDIN_APPTAINER = '''\
#!{python}
"""Stand-in for apptainer: log the call, run the containerised command on the host."""
import json
import os
import subprocess
import sys

argv = sys.argv[1:]
if argv == ["--version"]:
    print("apptainer version 1.3.4")
    sys.exit(0)
with open(os.environ["APPTAINER_STANDIN_LOG"], "a") as log:
    record = {{
        "argv": argv,
        "cwd": os.getcwd(),
        "slurm_job": os.environ.get("SLURM_JOB_ID"),
        "slurm_step": os.environ.get("SLURM_STEP_ID"),
        "node": os.environ.get("SLURMD_NODENAME"),
    }}
    log.write(json.dumps(record) + "\\n")
if "exec" not in argv:
    sys.exit(f"stand-in apptainer: not an exec call: {{argv}}")
if len(argv) >= 4 and argv[-2] == "-c":
    shell, command = argv[-3], argv[-1]
    sys.exit(subprocess.call([shell, "-c", command]))
# `apptainer exec [OPTIONS] IMAGE COMMAND [ARGS...]`, as srun starts it on each node
rest = argv[argv.index("exec") + 1 :]
while rest and rest[0].startswith("-"):
    rest = rest[2:] if rest[0] in ("--home", "--bind", "-B", "--pwd", "--env") else rest[1:]
sys.exit(subprocess.call(rest[1:]))
'''


def install_standin_apptainer(bindir: Path) -> Path:
    """Write the stand-in as both `apptainer` and `singularity` into ``bindir``."""
    bindir.mkdir(parents=True, exist_ok=True)
    for name in ("apptainer", "singularity"):
        exe = bindir / name
        exe.write_text(STANDIN_APPTAINER.format(python=sys.executable))
        exe.chmod(0o755)
    return bindir


def container_calls(log: Path, probes: bool = False) -> list[dict[str, Any]]:
    """The stand-in's recorded job calls: `argv`, the `image` and the host `command`
    (with ``probes``, the workflow's onstart check of the image's version instead)."""
    calls = []
    if not log.exists():
        return calls
    for line in log.read_text().splitlines():
        record = json.loads(line)
        argv = record["argv"]
        record["image"] = argv[-4]
        record["command"] = argv[-1]
        if (record["command"] == VERSION_PROBE) == probes:
            calls.append(record)
    return calls


def container_env(work: Path) -> tuple[dict[str, str], Path, Path]:
    """(environment, call log, image) for runs through the stand-in apptainer."""
    bindir = install_standin_apptainer(work / "standin-bin")
    log = work / "apptainer-calls.jsonl"
    image = work / "images" / "stormfusion-sevir.sif"
    image.parent.mkdir(parents=True, exist_ok=True)
    image.write_bytes(b"")
    env = tool_env(work, extra_path=[bindir])
    env["APPTAINER_STANDIN_LOG"] = str(log)
    return env, log, image
