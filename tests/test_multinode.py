"""`training.nodes` > 1: what the train_model job asks SLURM for and how it launches, and
the clear errors when SLURM or the nodes are missing.

The real two-node run (two slurmd, torchrun on each, weights equal to one node) is in
tests/test_slurm.py; these checks need no SLURM.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from workflow_support import (
    REPO,
    container_env,
    snakemake,
    study_config,
    tiny_config,
    tool_env,
    write_config,
)

pytestmark = pytest.mark.slow  # Snakemake runs


def _job_block(out: str, rule: str, run: str) -> str:
    """The dry run's listing of one job (from its `rule` line to the next blank line)."""
    for block in out.split("\n\n"):
        if re.search(rf"^(local)?rule {rule}:", block.strip(), re.M) and f"run={run}" in block:
            return block
    raise AssertionError(f"no {rule} job for {run} in:\n{out[-4000:]}")


def test_dry_run_shows_the_multi_node_request_and_launch_line(tmp_path: Path) -> None:
    """As the issue asks: `snakemake -n --profile profiles/slurm --config training=...`."""
    work = tmp_path / "work"
    write_config(work, study_config())
    env, _, _ = container_env(work)  # the profile runs jobs in apptainer: a stand-in here
    out = snakemake(
        work,
        "-n",
        "--profile", str(REPO / "profiles" / "slurm"),
        "--config", "training={nodes: 2, gpus: 4}",
        env=env,
    ).stdout  # fmt: skip
    job = _job_block(out, "train_model", "sgt")
    resources = dict(
        item.split("=", 1)
        for item in re.search(r"resources: (.*)", job).group(1).split(", ")  # type: ignore[union-attr]
    )
    assert resources["nodes"] == "2" and resources["tasks"] == "2"
    assert resources["gres"] == "gpu:4" and resources["mpi"] == "srun"
    assert resources["tasks_per_gpu"] == "0" and "gpu" not in resources
    assert "srun --nodes=$SLURM_NNODES --ntasks=$SLURM_NNODES --ntasks-per-node=1" in job
    assert "apptainer exec --nv" in job  # srun starts the image on every node
    assert (
        "torchrun --nnodes $SLURM_NNODES --nproc-per-node 4 --rdzv-backend c10d"
        ' --rdzv-endpoint "$head:29500" --rdzv-id "$SLURM_JOB_ID"'
    ) in job
    assert "head=$(scontrol show hostnames" in job and "-m stormfusion.cli train" in job
    assert "--batch-size 4" in job  # the global batch, as configured
    # one node keeps the single-node launch and the plain GPU request
    single = snakemake(work, "-n", "--profile", str(REPO / "profiles" / "slurm"), env=env).stdout
    one = _job_block(single, "train_model", "sgt")
    assert "srun" not in one and "gpu=1" in one and "nodes=" not in one


def test_several_nodes_without_slurm_stop_with_one_clear_error(tmp_path: Path) -> None:
    work = tmp_path / "work"
    training = {"nodes": 2, "gpus": 0}
    write_config(work, tiny_config(training=training))
    proc = snakemake(
        work, "results/models/unet2d/best.pt", "--cores", "2", env=tool_env(work), check=False
    )
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    log = work / "results" / "logs" / "train_model" / "unet2d.log"
    text += log.read_text() if log.exists() else ""
    assert (
        "stormfusion train: error: training.nodes=2 needs a SLURM allocation of 2 nodes: run "
        "with --profile profiles/slurm (this job runs outside SLURM)"
    ) in text
    assert not (work / "results" / "models" / "unet2d" / "latest.pt").exists()


def test_nodes_that_never_meet_end_with_one_line_naming_the_rendezvous(tmp_path: Path) -> None:
    """A launch whose torchrun fails (here: `srun` stands in and reports the rendezvous
    timeout torchrun raises) ends the job with the line that says what to check."""
    work = tmp_path / "work"
    training = {"nodes": 2, "gpus": 0, "rdzv_port": 29611, "rdzv_timeout": 30}
    write_config(work, tiny_config(training=training))
    fake = tmp_path / "slurm-bin"
    fake.mkdir()
    scripts = {
        "squeue": "echo 'nodeA,nodeB'",
        "scontrol": "echo nodeA; echo nodeB",
        "srun": "echo 'torch.distributed.elastic.rendezvous.api.RendezvousTimeoutError' >&2; "
        "exit 1",
    }
    for name, body in scripts.items():
        (fake / name).write_text(f"#!/bin/sh\n{body}\n")
        (fake / name).chmod(0o755)
    env = {**tool_env(work, extra_path=[fake]), "SLURM_JOB_ID": "4242"}
    env.pop("SLURM_JOB_NODELIST", None)
    proc = snakemake(work, "results/models/unet2d/best.pt", "--cores", "2", env=env, check=False)
    assert proc.returncode != 0
    log = work / "results" / "logs" / "train_model" / "unet2d.log"
    text = proc.stdout + proc.stderr + (log.read_text() if log.exists() else "")
    assert "RendezvousTimeoutError" in text
    assert (
        "stormfusion train: error: training on 2 nodes failed (exit 1, log above); "
        "RendezvousTimeoutError there means the nodes did not meet at nodeA:29611 within "
        "training.rdzv_timeout=30 s: is training.rdzv_port open between the nodes?"
    ) in text
    assert not (work / "results" / "models" / "unet2d" / "latest.pt").exists()
