"""The report step on small fake forecasts: tables, figures, intervals, provenance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from stormfusion.cli import main
from stormfusion.models import get_model
from stormfusion.report.inputs import RunScores, RunSpec
from stormfusion.report.reference import PUBLISHED, SEED_STAGE4, Protocol, reference_table
from stormfusion.report.stats import compute_stats
from stormfusion.report.tables import write_table
from stormfusion.verification.accumulator import ScoreAccumulator
from stormfusion.verification.contingency import ContingencyCounts
from stormfusion.verification.continuous import SUM_NAMES, ContinuousSums
from stormfusion.verification.scoring import score_run
from tests.verification_support import T_IN, T_OUT, Case, make_case, write_forecast_store

RUNS = {
    "unet2d": {"model": "unet2d", "args": {}, "ablation_of": None, "trainable": True},
    "persistence": {"model": "persistence", "args": {}, "ablation_of": None, "trainable": False},
    "sgt": {"model": "sgt", "args": {}, "ablation_of": None, "trainable": True},
    "sgt_no_gnn": {
        "model": "sgt",
        "args": {"use_gnn": False},
        "ablation_of": "sgt",
        "trainable": True,
    },
}
SGT_ARGS = {
    "input_frames": T_IN,
    "output_frames": T_OUT,
    "modalities": ["vil"],
    "hidden_dim": 16,
    "encoder_width": 8,
    "gnn_layers": 1,
    "gnn_heads": 2,
    "transformer_layers": 1,
    "transformer_heads": 2,
    "patch_size": 2,
    "knn": 3,
    "max_cells": 8,
    "edge_hidden": 8,
}


def _forecasts(case: Case) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    persistence = np.repeat(case.last_input[:, None], T_OUT, axis=1)
    truth = case.truth.astype(float)
    noisy = lambda s: np.clip(truth + rng.normal(0, s, truth.shape), 0, 255)  # noqa: E731
    return {
        "persistence": persistence,
        "unet2d": noisy(40.0),
        "sgt": noisy(15.0),
        "sgt_no_gnn": noisy(25.0),
    }


def _score_all(case: Case, results: Path) -> None:
    for run, forecast in _forecasts(case).items():
        model = RUNS[run]["model"]
        path = write_forecast_store(case.forecast_path(run), forecast, case.windows, run, model)
        score_run(
            path,
            case.zarr_dir / "vil.zarr",
            case.windows_csv,
            results / "scores" / f"{run}.csv",
            results / "scores" / f"{run}.json",
            results / "scores" / f"{run}.counts.npz",
        )
    for run, spec in RUNS.items():
        if spec["trainable"]:
            metrics = pd.DataFrame(
                {
                    "epoch": [1, 2, 3],
                    "train_loss": [0.9, 0.5, 0.3],
                    "val_loss": [1.0, 0.7, 0.6],
                    "lr": [1e-3] * 3,
                    "time_s": [1.0] * 3,
                    "samples_per_s": [5.0] * 3,
                    "train_mse": [0.5, 0.3, 0.2],
                    "val_mse": [0.6, 0.4, 0.35],
                }
            )
            (results / "models" / run).mkdir(parents=True, exist_ok=True)
            metrics.to_csv(results / "models" / run / "metrics.csv", index=False)


def _sgt_checkpoint(path: Path) -> None:
    torch.manual_seed(0)
    model = get_model("sgt", **SGT_ARGS)
    payload = {
        "format": 1,
        "model_name": "sgt",
        "model_args": SGT_ARGS,
        "config": {},
        "model": model.state_dict(),
        "epoch": 3,
        "data": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Case, Path, int]:
    root = tmp_path_factory.mktemp("report")
    case = make_case(root, n_events=4, size=32, seed=1)
    results = root / "results"
    _score_all(case, results)
    _sgt_checkpoint(results / "models" / "sgt" / "best.pt")
    rc = main(
        [
            "report",
            "--runs",
            json.dumps(RUNS),
            "--results",
            str(results),
            "--zarr-dir",
            str(case.zarr_dir),
            "--windows",
            str(case.windows_csv),
            "--events-meta",
            str(case.events_json),
            "--config-hash",
            "cfg123abc456",
            "--panel-events",
            "2",
            "--bootstrap",
            "200",
            "--seed",
            "7",
        ]
    )
    return case, results, rc


def test_main_table(report: tuple[Case, Path, int]) -> None:
    _, results, rc = report
    assert rc == 0
    main_csv = pd.read_csv(results / "tables" / "main.csv")
    assert list(main_csv.columns[:4]) == ["model", "csi_m", "csi_m_lo", "csi_m_hi"]
    for t in (16, 74, 133, 160, 181, 219):
        assert f"csi_{t}" in main_csv.columns
    for col in (
        "pod_m",
        "sucr_m",
        "bias_m",
        "mse",
        "mae",
        "mse_01",
        "mae_01",
        "lpips",
        "ssim",
        "csi_m_per_lead",
        "csi_m_pool4",
        "csi_m_pool16",
        "delta_csi_m",
        "config_hash",
        "git_commit",
    ):
        assert col in main_csv.columns
    assert main_csv["model"].tolist() == [
        "persistence",
        "unet2d",
        "sgt",
    ]  # no ablation, reference first
    assert (main_csv["lpips"] > 0).all()  # real LPIPS (weights from make setup)
    assert (main_csv["latency_ms"] == 12.5).all()  # the forecast store's latency
    assert (main_csv["config_hash"] == "cfg123abc456").all()
    assert (main_csv["data_fingerprint"] == "fp-verification-test").all()
    assert (
        (main_csv["csi_m_lo"] <= main_csv["csi_m"]) & (main_csv["csi_m"] <= main_csv["csi_m_hi"])
    ).all()
    by = main_csv.set_index("model")
    assert by.loc["persistence", "delta_csi_m"] == 0.0
    assert by.loc["sgt", "delta_csi_m"] == pytest.approx(
        by.loc["sgt", "csi_m"] - by.loc["persistence", "csi_m"]
    )
    # the table's CSI-M is the score step's
    summary = json.loads((results / "scores" / "sgt.json").read_text())
    assert by.loc["sgt", "csi_m"] == pytest.approx(summary["csi_m"])
    assert by.loc["sgt", "csi_m"] > by.loc["unet2d", "csi_m"]  # less noise, better CSI
    md = (results / "tables" / "main.md").read_text()
    assert "LPIPS n/a" not in md and "MS-SSIM n/a: frames of 32 px" in md
    assert "Provenance: config cfg123abc456 | data fp-verification-test" in md
    # every table declares its protocol
    assert "Protocol: 4 -> 3 frames (32 px), split 'val', windows manifest unknown" in md
    assert "VIL >= threshold (16, 74, 133, 160, 181, 219)" in md and "255 = missing" in md
    assert "x / 255 * 2 - 1" in md and "kernel = stride = 4 and 16 px" in md
    tex = (results / "tables" / "main.tex").read_text()
    assert r"\begin{tabular}" in tex and "cfg123abc456" in tex and "n/a" in tex


def test_ablation_and_per_lead_tables(report: tuple[Case, Path, int]) -> None:
    _, results, _ = report
    abl = pd.read_csv(results / "tables" / "ablations.csv", keep_default_na=False)
    assert abl["model"].tolist() == ["sgt", "sgt_no_gnn"]
    assert abl["ablation_of"].tolist() == ["", "sgt"]
    row = abl.set_index("model").loc["sgt_no_gnn"]
    assert float(row["delta_csi_m"]) == pytest.approx(float(row["csi_m"]) - float(abl["csi_m"][0]))
    per_lead = pd.read_csv(results / "tables" / "per_lead.csv")
    assert len(per_lead) == len(RUNS) * T_OUT
    assert sorted(per_lead["lead_time"].unique().tolist()) == [5, 10, 15]
    for name in ("main", "ablations", "per_lead"):
        for ext in ("csv", "md", "tex"):
            assert (results / "tables" / f"{name}.{ext}").is_file()
    # synthetic-size protocol: no published numbers anywhere
    assert not (results / "tables" / "reference.csv").exists()
    assert "Earthformer" not in (results / "tables" / "main.md").read_text()


def test_figures_with_provenance(report: tuple[Case, Path, int]) -> None:
    _, results, _ = report
    figs = results / "figures"
    names = {p.name for p in figs.iterdir()}
    stems = ("csi_lead", "performance_diagram", "training_curves", "storm_graph")
    for stem in (*stems, "transformer_attention"):
        assert {f"{stem}.png", f"{stem}.pdf"} <= names
    panels = [n for n in names if n.startswith("panels_") and n.endswith(".png")]
    assert len(panels) == 2
    with Image.open(figs / "csi_lead.png") as im:
        meta = json.loads(im.info["Description"])
    assert meta["config_hash"] == "cfg123abc456"
    assert meta["data_fingerprint"] == "fp-verification-test"
    assert b"cfg123abc456" in (figs / "performance_diagram.pdf").read_bytes()
    record = json.loads((results / "tables" / "report.json").read_text())
    assert record["reference_table"] is False and "differs" in record["reference_reason"]
    assert record["skipped_figures"] == {}


def test_reference_protocol() -> None:
    assert Protocol(13, 12, 384, True).matches() == (True, "")
    assert not Protocol(13, 12, 384, False).matches()[0]  # synthetic twin
    assert not Protocol(13, 12, 384, None).matches()[0]
    assert not Protocol(12, 6, 384, True).matches()[0]
    # the seed's Stage-4 numbers: 12 -> 1, per-batch means, best of epochs; never a target
    seed = [p for p in PUBLISHED if p.protocol == SEED_STAGE4]
    assert seed and seed[0].numbers == {
        "csi_74": 0.818,
        "csi_181": 0.499,
        "csi_219": 0.334,
        "lpips": 0.137,
    }
    assert "12 -> 1 frames" in SEED_STAGE4.describe() and "per batch" in SEED_STAGE4.describe()
    for ours in (Protocol(12, 6, 384, True), Protocol(12, 1, 384, True)):
        ok, why = ours.comparable(SEED_STAGE4)
        assert not ok and "not one we score" in why


def test_report_refuses_scores_of_other_data(
    report: tuple[Case, Path, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case, results, _ = report
    meta = tmp_path / "events.json"
    meta.write_text(json.dumps({"data_fingerprint": "other"}))
    rc = main(
        [
            "report",
            "--runs",
            json.dumps(RUNS),
            "--results",
            str(results),
            "--zarr-dir",
            str(case.zarr_dir),
            "--windows",
            str(case.windows_csv),
            "--events-meta",
            str(meta),
            "--config-hash",
            "x",
            "--panel-events",
            "0",
            "--bootstrap",
            "0",
            "--seed",
            "0",
        ]
    )
    assert rc == 2
    assert "rescore" in capsys.readouterr().err


def test_report_numbers_are_the_score_files_to_the_last_digit(
    report: tuple[Case, Path, int],
) -> None:
    _, results, _ = report
    main_csv = pd.read_csv(results / "tables" / "main.csv")
    per_lead = pd.read_csv(results / "tables" / "per_lead.csv")
    for run in ("persistence", "unet2d", "sgt"):
        summary = json.loads((results / "scores" / f"{run}.json").read_text())
        row = main_csv.set_index("model").loc[run]
        assert row["csi_m"] == summary["csi_m"]
        assert row["csi_m_per_lead"] == summary["csi_m_per_lead"]
        for t, value in summary["csi"].items():
            assert row[f"csi_{t}"] == value
        for name in ("hss", "pod", "sucr", "bias"):
            assert row[f"{name}_m"] == summary["threshold_mean"][name]
        for name in ("mse", "mae", "mse_01", "mae_01", "ssim", "lpips", "conservation"):
            assert row[name] == summary[name], name
        assert row["csi_m_pool4"] == summary["pooled"]["max4"]["csi_m"]
        assert row["csi_m_avgpool16"] == summary["pooled"]["avg16"]["csi_m"]
        lead_rows = per_lead[per_lead["model"] == run].sort_values("lead_time")
        assert lead_rows["csi_m"].tolist() == summary["by_lead"]["csi_m"]
        assert lead_rows["mse"].tolist() == summary["by_lead"]["mse"]
        assert lead_rows["lpips"].tolist() == summary["by_lead"]["lpips"]
        assert lead_rows["csi_74"].tolist() == summary["by_lead"]["csi"]["74"]


def test_report_holds_no_score_formula() -> None:
    # scores are computed by stormfusion.verification only: report/ never imports the score
    # functions, nor divides sums itself
    import ast

    folder = Path(__file__).resolve().parents[1] / "stormfusion" / "report"
    for path in folder.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert node.module != "stormfusion.verification.scores", path
                assert node.module != "stormfusion.verification.continuous" or all(
                    a.name in {"ContinuousScores"} for a in node.names
                ), path


def _fake_scores(name: str, model: str, seed: int) -> RunScores:
    rng = np.random.default_rng(seed)
    events, n_t, n_l = [f"S{i}" for i in range(5)], 6, 12
    hits = rng.integers(50, 100, (5, n_t, n_l))
    counts = np.stack(
        [
            hits,
            rng.integers(10, 50, hits.shape),
            rng.integers(10, 50, hits.shape),
            np.full(hits.shape, 10_000),
        ],
        axis=-1,
    )
    sums = np.zeros((5, n_l, len(SUM_NAMES)))
    sums[..., SUM_NAMES.index("sse")] = 4e5
    sums[..., SUM_NAMES.index("sae")] = 3e4
    sums[..., SUM_NAMES.index("n_pixels")] = 1e4
    acc = ScoreAccumulator(
        {"none": ContingencyCounts.from_table(events, counts, (16, 74, 133, 160, 181, 219))},
        ContinuousSums.from_table(events, sums),
        list(range(5, 65, 5)),
    )
    return RunScores(spec=RunSpec(name, model), acc=acc, summary=acc.summary())


def test_reference_table_beside_same_protocol(tmp_path: Path) -> None:
    scores = {
        "persistence": _fake_scores("persistence", "persistence", 0),
        "earthformer_like": _fake_scores("earthformer_like", "sgt", 1),
    }
    stats = compute_stats(scores, n_boot=50, seed=0)
    labels = ["16", "74", "133", "160", "181", "219"]
    prov = {"config_hash": "h", "data_fingerprint": "d", "package_version": "v", "git_commit": "c"}
    table = reference_table(stats, labels, prov, Protocol(13, 12, 384, True))
    write_table(table, tmp_path, prov)
    data = pd.read_csv(tmp_path / "reference.csv")
    pooled = data[data["counts"] == "counts pooled over all lead times"]
    published = pooled[pooled["source"].str.startswith("Gao et al.")]
    assert published["model"].tolist() == [
        "Persistence",
        "UNet",
        "PredRNN",
        "ConvLSTM",
        "Earthformer",
    ]
    row = published.set_index("model").loc["Earthformer"]
    assert row["csi_m"] == 0.4419 and row["csi_219"] == 0.1791 and row["mse_1e3"] == 3.6957
    # CasCast's re-scoring of the official checkpoint beside the paper's number
    rescored = pooled[pooled["model"].str.contains("re-scored")]
    assert rescored["csi_m"].tolist() == [0.4310] and "CasCast" in rescored["source"].iloc[0]
    ours = pooled[pooled["source"] == "this study"].set_index("model")
    assert ours.loc["persistence", "csi_m"] == stats["persistence"].categorical.csi_m
    assert ours.loc["persistence", "mse_1e3"] == pytest.approx(40.0 / 255**2 * 1e3)
    # the per-lead group shows our per-lead CSI-M beside Earthformer's Table 13
    per_lead = data[data["counts"] == "CSI per lead time, then averaged"].set_index("model")
    assert per_lead.loc["Earthformer", "csi_m"] == 0.4359
    assert per_lead.loc["persistence", "csi_m"] == stats["persistence"].categorical.csi_m_per_lead
    # the seed's 12 -> 1, per-batch, best-of-epochs numbers are never beside a run
    assert not data["model"].str.contains("seed").any()
    md = (tmp_path / "reference.md").read_text()
    assert "Published SEVIR reference numbers (separate from our results)" in md
    assert "0.4419" in md and "0.4310" in md


def test_synthetic_twin_is_named_in_captions_and_footers(tmp_path: Path) -> None:
    from stormfusion.report.build import DATA_LABELS, label_data
    from stormfusion.report.style import provenance_line
    from stormfusion.report.tables import Table

    table = label_data(Table("main", "Main results", pd.DataFrame(), (), ()), False)
    assert table.title == "Main results (synthetic twin)"
    assert "synthetic twin of SEVIR" in table.notes[-1]
    line = provenance_line({"config_hash": "h", "data_source": DATA_LABELS[False]})
    assert line.endswith("| synthetic twin of SEVIR (tests the pipeline, not the models)")
    assert "real SEVIR archive" in label_data(table, True).title


@pytest.mark.parametrize(
    ("grid", "row", "col", "expected"), [(64, 20, 10, (10, 20)), (32, 10, 5, (10.5, 20.5))]
)
def test_storm_graph_draws_a_cell_on_its_peak(
    grid: int, row: int, col: int, expected: tuple[float, float]
) -> None:
    """A cell the detector finds at one pixel is drawn on that pixel of a 64-pixel image:
    on the pixel itself for a 64 grid, between the two it covers for a 32 grid."""
    from stormfusion.models.sgt.detector import StormCellDetector
    from stormfusion.report.figures import cell_pixels

    vil = torch.zeros(1, grid, grid)
    vil[0, row, col] = 200.0
    cells = StormCellDetector(threshold=74.0, window=5, max_cells=4)(vil)
    positions = cells.positions[0, cells.valid[0]]
    assert cell_pixels(positions.numpy(), 64).tolist() == [list(expected)]
