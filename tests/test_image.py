"""The image, built for real from the Dockerfile (CPU variant, buildah on a debootstrapped
Debian base) and exercised: its version names the baked commit, it carries no compiler,
the tiny DAG runs with every job inside it through Snakemake's own `--use-singularity`
path, and running it by hand as the owner of a checkout writes results.

`make test-container` runs these (marker `container`; the default test run deselects them,
as the build takes minutes). Where the image cannot be built, they fail with the reason.
Set STORMFUSION_TEST_IMAGE=TAG to reuse a built image, STORMFUSION_KEEP_IMAGE=1 to keep
the one built here."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import xarray as xr
from image_support import (
    TEST_TAG,
    BuiltImage,
    image_tool,
    install_image_standin,
    run_in_image,
    standin_env,
)
from workflow_support import (
    merge,
    planned_jobs,
    snakemake,
    tiny_config,
    tool_env,
    write_config,
)

from stormfusion.model_names import TRAINABLE

pytestmark = [pytest.mark.container, pytest.mark.slow]


@pytest.fixture(scope="module")
def image() -> Iterator[BuiltImage]:
    tag = os.environ.get("STORMFUSION_TEST_IMAGE", "")
    built = not tag
    try:
        if built:
            tag = TEST_TAG
            commit = _build_arg("cpu", "GIT_COMMIT")  # this checkout's, as the build sees it
            image_tool("build", "cpu", tag, timeout=5400)
        rootfs = Path(image_tool("rootfs", tag).strip())
        env = dict(line.split("=", 1) for line in image_tool("env", tag).splitlines() if line)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"the CPU image could not be built or mounted on this machine: {exc}")
    if built:
        assert env["STORMFUSION_GIT_COMMIT"] == commit != "unknown"
    yield BuiltImage(tag, rootfs, env)
    if built and os.environ.get("STORMFUSION_KEEP_IMAGE") != "1":
        image_tool("remove", tag)


def _build_arg(variant: str, name: str) -> str:
    args = image_tool("args", variant).splitlines()
    return next(a.split("=", 1)[1] for a in args if a.startswith(f"{name}="))


def test_version_shows_the_baked_commit(image: BuiltImage) -> None:
    proc = run_in_image(image, ["stormfusion", "--version"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"stormfusion 0.1.0 (git {image.commit})\n"


def test_image_has_its_runtime_and_no_compiler(image: BuiltImage) -> None:
    probe = (
        "import torch, torch_geometric, pysteps, cv2\n"
        "from stormfusion.verification.lpips import load_lpips\n"
        "load_lpips()  # the converted weights, offline\n"
        "print(torch.__version__)"
    )
    proc = run_in_image(image, ["python", "-c", probe])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("+cpu")
    for tool in ("gcc", "cc", "g++", "make"):
        assert not (image.rootfs / "usr" / "bin" / tool).exists(), f"{tool} in the image"
    assert image.env["PYTHONSAFEPATH"] == "1" and image.env["PYTHONPATH"] == ""


def _decoys(work: Path) -> Path:
    """Host-side copies of `stormfusion` that must never run: a package in the working
    directory (what `python -m` would import without PYTHONSAFEPATH) and a command on the
    host PATH. Each leaves a marker file when it runs."""
    marker = work / "HOST_CODE_RAN"
    package = work / "stormfusion"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        f"open({str(marker)!r}, 'a').write('package\\n')\nraise SystemExit(3)\n"
    )
    bindir = work / "decoy-bin"
    bindir.mkdir()
    (bindir / "stormfusion").write_text(f"#!/bin/sh\necho command >> '{marker}'\nexit 3\n")
    (bindir / "stormfusion").chmod(0o755)
    return bindir


def test_tiny_dag_runs_every_job_inside_the_image(image: BuiltImage, tmp_path: Path) -> None:
    work = tmp_path / "work"
    decoy_bin = _decoys(work)
    standin = install_image_standin(tmp_path / "standin-bin")
    log = tmp_path / "apptainer-calls.jsonl"
    sif = tmp_path / "stormfusion-sevir.sif"  # a name for config `container`; the
    sif.write_bytes(b"")  # stand-in runs the built image
    config = tiny_config(container=str(sif))
    # one run trains with torchrun (2 processes, gloo): `python -m stormfusion.cli`
    config = merge(config, {"models": {"unet2d": {"training": {"gpus": 2}}}})
    write_config(work, config)
    env = tool_env(work, extra_path=[decoy_bin, standin])
    env.update(standin_env(image, log))
    env["STORMFUSION_GIT_COMMIT"] = "host-side-marker"  # what host code would record

    proc = snakemake(work, "--cores", "2", "--use-singularity", env=env, timeout=2400)
    out = proc.stdout + proc.stderr
    assert not (work / "HOST_CODE_RAN").exists(), (work / "HOST_CODE_RAN").read_text()

    calls = [json.loads(line) for line in log.read_text().splitlines()]
    jobs = [c for c in calls if c["argv"][-1] != "stormfusion --version"]
    executed = planned_jobs(out)
    assert len(jobs) == sum(n for rule, n in executed.items() if rule != "all") > 10
    assert sum("-m stormfusion.cli" in c["argv"][-1]
               for c in jobs) == 1  # fmt: skip
    # onstart asked the image which code it carries
    assert f"(git {image.commit})" in out

    # what only the image's code records: the commit baked into it, never the host's
    results = work / "results"
    for run, spec in config["models"].items():
        score = json.loads((results / "scores" / f"{run}.json").read_text())
        assert score["provenance"]["scoring"]["git_commit"] == image.commit
        with xr.open_zarr(results / "forecasts" / f"{run}.zarr", consolidated=False) as ds:
            prov = ds.attrs["provenance"]
            prov = json.loads(prov) if isinstance(prov, str) else prov
            assert prov["git_commit"] == image.commit
        if TRAINABLE[spec["model"]]:
            assert (results / "models" / run / "best.pt").is_file()
    report = json.loads((results / "tables" / "report.json").read_text())
    assert report["provenance"]["git_commit"] == image.commit
    assert (results / "tables" / "main.csv").is_file()


def test_running_by_hand_as_the_checkout_owner(image: BuiltImage, tmp_path: Path) -> None:
    """`docker run --user $(id -u):$(id -g) -v $PWD:/work IMAGE stormfusion ...` as the
    owner of a checkout writes its results, owned by that user; a folder the user may not
    write is one clear error naming the path."""
    owner = 4242
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    os.chown(checkout, owner, owner)
    step = ["stormfusion", "synthesize", "--out", "data/sevir", "--events", "2"]
    step += ["--random-events", "0", "--image-size", "32"]
    proc = run_in_image(image, step, user=f"{owner}:{owner}", mounts=[(checkout, "/work")])
    assert proc.returncode == 0, proc.stderr
    catalog = checkout / "data" / "sevir" / "CATALOG.csv"
    assert catalog.is_file() and catalog.stat().st_uid == owner

    locked = tmp_path / "locked"
    locked.mkdir(mode=0o755)  # root's, not writable for the user
    proc = run_in_image(image, step, user=f"{owner}:{owner}", mounts=[(locked, "/work")])
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    [error] = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert "data" in error and "Permission denied" in error
    assert not list(locked.iterdir())


def test_cuda_variant_differs_only_in_build_args_and_parses() -> None:
    cpu = image_tool("args", "cpu").splitlines()
    cuda = image_tool("args", "cuda").splitlines()
    assert {a for a in cpu + cuda if not a.startswith("--")} >= {a for a in cuda if "=" in a}
    assert set(cpu) - set(cuda) <= {"--build-arg"} | {a for a in cpu if "=" in a}
    assert not any(a.startswith("BASE_IMAGE=") for a in cuda)  # the Dockerfile's default
    # buildah reads the whole Dockerfile and resolves the CUDA base, then stops: the
    # image is not on this machine and registries other than Debian's are out of reach.
    with pytest.raises(RuntimeError) as failed:
        image_tool("parse", "cuda", timeout=600)
    assert "docker.io/nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04" in str(failed.value)
