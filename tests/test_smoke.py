"""The smoke preset (config/protocols/smoke.yaml): its dry run on the bucket, and its
Snakemake run against a twin served by a loopback S3 server (moto) with events-only download.

The run test keeps the preset whole (events-only download, all four modalities, storm events
of 2019 H2, 12 -> 6, regridding to 64 x 64, the demo's reduced model sizes) and shrinks only
what makes it slow on two shared cores: the twin is small (a few events of 2019 H2 at 64 x 64
instead of 24 real ones at 384), the runs are the tiny DAG's five (baselines, UNet2D, the SGT
and one ablation, not all nine) and each trains for 2 steps. It runs the whole DAG, report
included.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from workflow_support import (
    REPO,
    TINY_RUNS,
    load_yaml,
    merge,
    planned_jobs,
    snakemake,
    study_config,
    write_config,
)

from stormfusion.data.synthetic import synthesize_archive
from stormfusion.testing import archive_files, loopback_client, loopback_s3, upload_public

SMOKE = REPO / "config" / "protocols" / "smoke.yaml"


def smoke_config() -> dict:
    return merge(study_config(), load_yaml(SMOKE))


def test_smoke_preset_dry_run(tmp_path: Path) -> None:
    work = tmp_path / "work"
    write_config(work, study_config())
    out = snakemake(work, "--configfile", str(SMOKE), "--dry-run", "--printshellcmds").stdout
    counts = planned_jobs(out)
    runs = smoke_config()["models"]
    assert set(runs) == set(study_config()["models"])  # every model and ablation
    assert counts["download_sevir"] == counts["plan_download"] == 1
    assert counts["convert_to_zarr"] == 4 and counts["score_model"] == len(runs)
    assert "--events-only --source-catalog data/smoke/interim/download/CATALOG.csv" in out
    assert "--max-events 24" in out and "--start 2019-07-01 --end 2020-01-01" in out
    assert "--input-frames 12 --output-frames 6" in out
    demo = load_yaml(REPO / "config" / "demo.yaml")["models"]
    assert smoke_config()["models"] == demo  # the demo's reduced sizes


@pytest.fixture()
def loopback_bucket(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    src = tmp_path / "bucket"
    # events spread over 2018 H2, 2019 H1 and 2019 H2: about a third fall in the smoke window
    synthesize_archive(src, n_storm=18, n_random=2, image_size=64, year=2019, seed=2)
    with loopback_s3() as (endpoint, _port):
        client = loopback_client(endpoint)
        client.create_bucket(Bucket="sevir")
        upload_public(client, "sevir", archive_files(src), 8 << 20)
        yield endpoint, src


@pytest.mark.slow
def test_smoke_run_on_loopback_s3(tmp_path: Path, loopback_bucket: tuple[str, Path]) -> None:
    endpoint, _src = loopback_bucket
    config = smoke_config()
    config["models"] = {run: config["models"][run] for run in TINY_RUNS}
    tiny = load_yaml(REPO / "tests" / "data" / "tiny.yaml")
    config = merge(
        config,
        {
            "s3": {"endpoint_url": endpoint, "region": "us-east-1", "retries": 0},
            # a 64 px twin: one window per training event (random sampling), so a batch of 2
            "training": {"epochs": 1, "max_steps_per_epoch": 2, "batch_size": 2},
            "evaluation": {"bootstrap": 10},
            "resources": tiny["resources"],
        },
    )
    for run in config["models"].values():
        run.pop("training", None)
    work = tmp_path / "work"
    write_config(work, config)
    snakemake(work, "--cores", "2", timeout=1800)
    manifest = json.loads((work / "data/smoke/interim/download_manifest.json").read_text())
    assert manifest["events_only"] and manifest["range_bytes"] < manifest["source_bytes"]
    events = json.loads((work / "data/smoke/interim/events.json").read_text())
    assert 3 <= events["n_events"] <= 24
    assert all("sha256" in v or "etag" in v for v in events["raw_files"].values())
    for run in TINY_RUNS:
        assert (work / "results/smoke/scores" / f"{run}.json").is_file()
    assert (work / "results/smoke/tables/main.csv").is_file()
