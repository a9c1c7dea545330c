"""Container wiring: under `--use-singularity` every job runs through `apptainer exec` with
the configured image and the profile's arguments. No apptainer exists here: a stand-in
executable (tests/workflow_support.py) records each call and runs the command on the host.
The whole tiny DAG through the stand-in is tests/test_pipeline.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
from workflow_support import (
    REPO,
    container_calls,
    container_env,
    install_standin_apptainer,
    planned_jobs,
    snakemake,
    tiny_config,
    tool_env,
    write_config,
)

from stormfusion import __version__
from stormfusion.provenance import image_code_warning


def test_standin_runs_the_command_and_records_the_call(tmp_path: Path) -> None:
    bindir = install_standin_apptainer(tmp_path / "bin")
    log = tmp_path / "calls.jsonl"
    version = subprocess.run(
        [bindir / "apptainer", "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith("apptainer version 1.")
    proc = subprocess.run(
        [bindir / "apptainer", "exec", "--home", str(tmp_path), "--nv", "img.sif", "bash",
         "-c", "echo inside > out.txt; exit 3"],
        cwd=tmp_path, env={"APPTAINER_STANDIN_LOG": str(log), "PATH": "/usr/bin:/bin"},
        check=False,
    )  # fmt: skip
    assert proc.returncode == 3  # the command's own status comes back
    assert (tmp_path / "out.txt").read_text() == "inside\n"
    [call] = container_calls(log)
    assert call["image"] == "img.sif" and "--nv" in call["argv"]
    assert call["command"].startswith("echo inside")


def test_every_job_runs_in_the_configured_image(tmp_path: Path) -> None:
    work = tmp_path / "work"
    env, log, image = container_env(work)
    write_config(work, tiny_config(container=str(image)))
    proc = snakemake(
        work,
        "data/interim/events.csv",
        "--cores", "2",
        "--use-singularity",
        "--apptainer-args=--nv",
        env=env,
    )  # fmt: skip
    assert "Activating singularity image" in proc.stdout + proc.stderr
    # the steps really ran (on the host, through the stand-in) ...
    events = pd.read_csv(work / "data/interim/events.csv")
    assert len(events) > 0 and events["id"].str.startswith("S").all()
    # ... one container call per job, each with the image, --nv and the rule's command
    [probe] = container_calls(log, probes=True)  # onstart: which code the image carries
    assert probe["image"] == str(image) and "--nv" in probe["argv"]
    calls = container_calls(log)
    assert len(calls) == 2
    assert "stormfusion synthesize --out data/sevir" in calls[0]["command"]
    assert "stormfusion select-events --catalog data/sevir/CATALOG.csv" in calls[1]["command"]
    for call in calls:
        argv = call["argv"]
        assert call["image"] == str(image)
        assert argv[argv.index("exec") :][:3] == ["exec", "--home", str(work)]
        assert "--nv" in argv
        assert call["cwd"] == str(work)


def test_without_the_flag_no_container_is_used(tmp_path: Path) -> None:
    work = tmp_path / "work"
    env, log, image = container_env(work)
    write_config(work, tiny_config(container=str(image)))
    snakemake(work, "data/sevir/CATALOG.csv", "--cores", "1", env=env)
    assert (work / "data/sevir/CATALOG.csv").is_file()
    assert container_calls(log) == []


def test_a_registry_image_is_pulled_once_before_the_jobs(tmp_path: Path) -> None:
    """Snakemake 9 pulls docker:// images with `apptainer pull` into .snakemake/singularity;
    a local .sif (as above) is used in place. The dry run names the pull."""
    work = tmp_path / "work"
    env, _, _ = container_env(work)
    image = "docker://ghcr.io/stormfusion/stormfusion-sevir:0.1.0"
    write_config(work, tiny_config(container=image))
    proc = snakemake(work, "--dry-run", "--use-singularity", "--cores", "2", env=env)
    assert f"Singularity image {image} will be pulled." in proc.stdout + proc.stderr
    assert planned_jobs(proc.stdout)["make_report"] == 1


def test_onstart_warns_when_the_image_carries_other_code(tmp_path: Path) -> None:
    """The stand-in runs the probe on the host, so the 'image' reports the commit set in
    STORMFUSION_GIT_COMMIT, as a real image reports the one baked into it."""
    work = tmp_path / "work"
    env, _, image = container_env(work)
    write_config(work, tiny_config(container=str(image)))
    env["STORMFUSION_GIT_COMMIT"] = "0123abcd"
    proc = snakemake(work, "data/sevir/CATALOG.csv", "--cores", "1", "--use-singularity", env=env)
    out = proc.stdout + proc.stderr
    assert "every job runs the image's code, which differs from this checkout's" in out
    assert f"image {image} has stormfusion " in out and "(git 0123abcd)" in out
    # a dry run starts nothing, so it asks nothing
    dry = snakemake(work, "-n", "--forceall", "--use-singularity", "--cores", "1", env=env)
    assert "runs the image's code" not in dry.stdout + dry.stderr


def test_code_warning_only_when_image_and_checkout_may_differ() -> None:
    same = "stormfusion 0.1.0 (git abc)"
    assert image_code_warning("img.sif", same, same) is None
    assert "differs from" in (
        image_code_warning("img.sif", "stormfusion 0.1.0 (git def)", same) or ""
    )
    dirty = "stormfusion 0.1.0 (git abc-dirty)"
    assert "may differ" in (image_code_warning("img.sif", dirty, dirty) or "")
    assert "could not ask the image img.sif" in (image_code_warning("img.sif", None, same) or "")


def test_version_names_the_baked_commit_first(tmp_path: Path) -> None:
    env = {**tool_env(tmp_path), "STORMFUSION_GIT_COMMIT": "feedbeef"}
    out = subprocess.run(
        ["stormfusion", "--version"], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out == f"stormfusion {__version__} (git feedbeef)\n"
    env.pop("STORMFUSION_GIT_COMMIT")
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    out = subprocess.run(
        ["stormfusion", "--version"], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith(f"stormfusion {__version__} (git {head}")
