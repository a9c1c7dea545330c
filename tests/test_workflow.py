"""The DAG as a whole: dry runs of the study, the published protocol and the demo, config
validation against the schema, and the profiles. Nothing here runs a step."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from workflow_support import (
    REPO,
    STUDY_RULES,
    demo_config,
    merge,
    planned_jobs,
    planned_runs,
    snakemake,
    study_config,
    tiny_config,
    write_config,
)

from stormfusion.models import get_model_class


def _study_work(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(REPO / "config.yaml", work / "config.yaml")
    return work


def test_study_dry_run_lists_every_job_of_the_study(tmp_path: Path) -> None:
    config = study_config()
    runs = config["models"]
    trained = {name for name, spec in runs.items() if get_model_class(spec["model"]).trainable}
    work = _study_work(tmp_path)

    out = snakemake(work, "--dry-run", "--printshellcmds", "--cores", "8").stdout

    counts = planned_jobs(out)
    assert counts == {
        "all": 1,
        "download_catalog": 1,
        "plan_download": 1,
        "select_events": 1,
        "download_sevir": 1,
        "convert_to_zarr": 4,
        "split_events": 1,
        "train_model": 8,
        "predict_model": 10,
        "score_model": 10,
        "make_report": 1,
    }
    assert set(counts) - {"all"} == set(STUDY_RULES)
    assert planned_runs(out, "train_model") == trained
    assert planned_runs(out, "predict_model") == set(runs)
    assert planned_runs(out, "score_model") == set(runs)
    # the seed preset: 541 storm events of 2019H2 from the bucket, the seed's own 80/20
    # split of the catalog's VIL ids (it reads the catalog), 12 -> 6
    assert "stormfusion download --bucket sevir --region us-west-2" in out
    assert "--concurrency 8" in out
    assert "--max-events 541" in out
    assert "--start 2019-07-01 --end 2020-01-01" in out
    assert "--strategy seed_catalog --seed 42 --val-fraction 0.2" in out
    assert "--catalog data/sevir/CATALOG.csv" in out
    assert "--input-frames 12 --output-frames 6" in out
    assert "--split val" in out
    assert "--zarr-dir data/interim/zarr" in out and "--out-dir results/models/sgt " in out
    # the seed's models: its SGT with its dropout and heads, ours beside it, its Stage-4 UNet;
    # the ablations inherit the base run's arguments
    seed_args = '"dropout": 0.1, "gnn_heads": 4, "transformer_heads": 8'
    assert f"--model sgt --model-args '{{{seed_args}}}'" in out
    assert "--model-args '{" + seed_args + ', "use_gnn": false}' + "'" in out
    assert "--model sgt_advect " in out
    assert "--model unet2d_stage4 " in out and "--out-dir results/models/unet2d " in out
    # learned models train on a GPU, baselines forecast without one
    assert "gpu=1" in out


def test_protocol_overlay_merges_over_the_study_config(tmp_path: Path) -> None:
    work = _study_work(tmp_path)
    out = snakemake(
        work,
        "--dry-run",
        "--printshellcmds",
        "--cores",
        "8",
        "--configfile",
        str(REPO / "config" / "protocols" / "sevir.yaml"),
    ).stdout
    assert "--strategy date" in out
    assert "--train-end 2019-01-01 --val-end 2019-06-01" in out
    assert "--input-frames 13 --output-frames 12 --stride 12" in out
    assert "--split test" in out
    # the seed preset's event cap and date range are cleared: every storm event
    assert "--max-events" not in out
    assert "--start 2019-07-01" not in out
    # VIL only, storm and random events (tests/test_protocol.py checks the whole DAG)
    assert "--kind all" in out and "--modalities vil --out" in out
    # the baselines and the learned models (both SGTs) on VIL; the ablations are left out
    assert planned_jobs(out)["train_model"] == 4
    assert "--model unet2d " in out and "unet2d_stage4" not in out  # ours, not the seed's
    assert "results/sevir-protocol/tables/main.csv" in out


def test_stage4_preset_runs_the_seeds_stage4_baselines(tmp_path: Path) -> None:
    work = _study_work(tmp_path)
    out = snakemake(
        work,
        "--dry-run",
        "--printshellcmds",
        "--cores",
        "8",
        "--configfile",
        str(REPO / "config" / "protocols" / "stage4.yaml"),
    ).stdout
    assert planned_runs(out, "predict_model") == {"persistence", "optical_flow", "unet2d"}
    assert planned_runs(out, "train_model") == {"unet2d"}
    assert "--model unet2d_stage4 " in out
    assert "--input-frames 12 --output-frames 1" in out and "--max-events 541" in out
    assert "--epochs 10" in out and "--weight-decay 0.0" in out and "--no-augment" in out
    assert "results/stage4/tables/main.csv" in out


def test_demo_dry_run_uses_the_synthetic_twin(tmp_path: Path) -> None:
    """As `make demo` runs it: config.yaml overlaid with config/demo.yaml, local profile."""
    work = _study_work(tmp_path)
    out = snakemake(
        work,
        "--profile", str(REPO / "profiles" / "local"),
        "--configfile", str(REPO / "config" / "demo.yaml"),
        "--dry-run",
    ).stdout  # fmt: skip
    counts = planned_jobs(out)
    assert counts["synthesize_sevir"] == 1
    assert "download_sevir" not in counts and "download_catalog" not in counts
    assert counts["predict_model"] == counts["score_model"] == len(study_config()["models"])
    assert "stormfusion synthesize" in out
    assert "gpu=1" not in out  # the demo runs on CPU
    # an ablation states only its switch and inherits the rest of its base run's arguments
    assert '"transformer_layers": 2, "use_gnn": false}' in out
    assert planned_runs(out, "train_model") == {
        run
        for run, spec in demo_config()["models"].items()
        if get_model_class(spec["model"]).trainable
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"split": {"strategy": "sideways"}}, "sideways"),
        ({"selection": {"modalities": ["vil", "radar"]}}, "radar"),
        ({"training": {"epochs": 0}}, "epochs"),
        ({"models": {"broken": {"model": "unet2d", "argz": {}}}}, "argz"),
        ({"colour": "blue"}, "colour"),
        # run names become folders and file names: letters, digits, `_.-`, no leading dot
        ({"models": {"x`touch INJECTED`": {"model": "persistence"}}}, "x`touch INJECTED`"),
        ({"models": {"../../outside/escaped": {"model": "persistence"}}}, "../../outside"),
        ({"models": {"two words": {"model": "persistence"}}}, "two words"),
        ({"models": {"line\nbreak": {"model": "persistence"}}}, "line\\nbreak"),
        # configured folders: no `..` component, no control characters
        ({"paths": {"results": "../outside"}}, "../outside"),
        ({"paths": {"interim": "data/../../up"}}, "data/../../up"),
        ({"paths": {"raw": "data/raw\n"}}, "data/raw\\n"),
    ],
)
def test_invalid_config_is_rejected_with_the_key_named(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    work = tmp_path / "work"
    write_config(work, merge(tiny_config(), change))
    proc = snakemake(work, "--dry-run", "--cores", "1", check=False)
    assert proc.returncode != 0
    combined = proc.stdout + proc.stderr
    assert "validat" in combined.lower()
    assert message in combined


def test_run_names_are_matched_literally(tmp_path: Path) -> None:
    """The `run` wildcard's pattern is built from escaped names: `u.1` does not match `ux1`."""
    work = tmp_path / "work"
    write_config(work, {"models": {"u.1": {"model": "persistence"}}})
    ok = snakemake(work, "--dry-run", "--cores", "1", "results/scores/u.1.json").stdout
    assert planned_runs(ok, "score_model") == {"u.1"}
    proc = snakemake(work, "--dry-run", "--cores", "1", "results/scores/ux1.json", check=False)
    assert proc.returncode != 0
    assert "MissingRuleException" in proc.stdout + proc.stderr


def test_schema_defaults_fill_a_minimal_config(tmp_path: Path) -> None:
    """A config with only the runs gets every other setting from the schema."""
    work = tmp_path / "work"
    write_config(work, {"models": {"persistence": {"model": "persistence"}}})
    out = snakemake(work, "--dry-run", "--printshellcmds", "--cores", "1").stdout
    counts = planned_jobs(out)
    assert counts["synthesize_sevir"] == 1  # default source: synthetic
    assert counts["convert_to_zarr"] == 4
    assert "train_model" not in counts  # persistence has no weights
    assert "--events 48 --random-events 8 --image-size 384" in out


def test_slurm_profile_requests_gpus_and_containers() -> None:
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert profile["software-deployment-method"] == "apptainer"
    assert "--nv" in profile["apptainer-args"].split()
    assert profile["slurm-status-command"] == "squeue"
    assert {"slurm_account", "slurm_partition", "mem_mb", "runtime"} <= set(
        profile["default-resources"]
    )
    assert profile["set-resources"]["train_model"]["slurm_partition"] == "gpu"
    # the learned runs ask for the GPU in the study config
    resources = study_config()["resources"]
    assert resources["train_model"]["gpu"] == 1
    assert resources["predict_model"]["gpu"] == 1
