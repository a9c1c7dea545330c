"""The learning check: every learned model of ours, trained briefly on the synthetic twin
with the real loader and trainer, beats persistence in CSI-M on the validation windows; the
seed's SGT, trained the same, learns (see ``test_seed_sgt_learns``).

CSI-M: the six VIL thresholds' CSI, counts pooled over all validation samples and leads
(stormfusion.verification). The twin here is smaller than the demo's (32 x 32, 16 storm
events) and the models are at their smallest useful size, so that the check fits the test
suite's time; the demo runs the same check at 64 x 64 with the demo-size models.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from training_support import build_twin_stores, predict_argv, train_argv

from stormfusion.cli import main
from stormfusion.data.dataset import SevirWindowDataset
from stormfusion.data.selection import SelectionOptions, run_selection
from stormfusion.data.sevir import VIL_THRESHOLDS
from stormfusion.data.synthetic import synthesize_archive
from stormfusion.verification.contingency import count_batch
from stormfusion.verification.scores import csi_m_pooled

pytestmark = pytest.mark.slow  # about a minute on 2 cores (three short trainings)

SIZE = 32
#: the seed's SGT (``sgt``) at its smallest useful size (8 x 8 feature grid, 4 x 4 tokens)
SGT_ARGS = {
    "hidden_dim": 16,
    "encoder_width": 8,
    "gnn_layers": 1,
    "gnn_heads": 2,
    "transformer_layers": 1,
    "transformer_heads": 2,
    "patch_size": 2,
    "knn": 4,
    "max_cells": 8,
    "peak_window": 4,
    "splat_sigma": 1.0,
    "edge_hidden": 16,
}
#: our SGT (``sgt_advect``)
SGT_ADVECT_ARGS = {
    "hidden_dim": 16,
    "encoder_channels": 8,
    "gnn_layers": 1,
    "transformer_layers": 1,
    "heads": 2,
    "patch_size": 2,
    "knn": 4,
    "max_cells": 8,
    "min_separation": 4,
    "splat_sigma": 0.05,
}
#: run -> (model, constructor arguments, epochs, learning rate)
LEARNED = {
    "unet2d": ("unet2d", {"widths": [16, 32, 64]}, 4, 2e-3),
    # patch 2: with the default 4 x 4 patches a 32 x 32 grid leaves the ConvLSTM an 8 x 8
    # state, too coarse for the twin's small cells; it then only learns to blur
    # persistence (lower MSE, lower CSI). The demo (64 x 64) uses patch 2 too (a 32 x 32 state).
    "convlstm": ("convlstm", {"hidden_channels": [16], "patch_size": 2}, 4, 2e-3),
    "sgt_advect": ("sgt_advect", SGT_ADVECT_ARGS, 4, 2e-3),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("learning")
    synthesize_archive(root / "raw", n_storm=16, n_random=0, image_size=SIZE, year=2019, seed=1)
    events = root / "index" / "events.csv"
    run_selection(
        root / "raw" / "CATALOG.csv",
        SelectionOptions(),
        events,
        events.with_suffix(".json"),
        data_root=root / "raw",
    )
    return {**build_twin_stores(root / "raw", events, root), "root": root}


def csi_m(data: dict[str, Path], store: Path) -> float:
    truth = SevirWindowDataset(data["zarr"], data["windows"], "val", modalities=(), image_size=SIZE)
    target = torch.stack([truth[i]["target"] for i in range(len(truth))])
    forecast = torch.from_numpy(xr.open_zarr(store, consolidated=False)["forecast"].values)
    counts = count_batch(forecast, target, VIL_THRESHOLDS).sum(0).numpy()
    return float(np.asarray(csi_m_pooled(counts)))


def predict(
    data: dict[str, Path], run: str, model: str, args: dict[str, object], checkpoint: Path | None
) -> Path:
    out = data["root"] / "forecasts" / f"{run}.zarr"
    argv = predict_argv(
        data, out, model=model, args=args, checkpoint=checkpoint, batch_size=8, image_size=SIZE
    )
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def persistence_csi_m(data: dict[str, Path]) -> float:
    return csi_m(data, predict(data, "persistence", "persistence", {}, None))


def train(
    data: dict[str, Path], run: str, model: str, args: dict[str, object], epochs: int, lr: float
) -> Path:
    """Train ``model`` with the real trainer; returns its output folder."""
    out = data["root"] / "models" / run
    argv = train_argv(
        data,
        out,
        model=model,
        args=args,
        epochs=epochs,
        batch_size=4,
        lr=lr,
        checkpoint_every_steps=0,
        image_size=SIZE,
    )
    assert main(argv) == 0
    return out


@pytest.mark.parametrize("run", sorted(LEARNED))
def test_learned_model_beats_persistence(
    run: str, data: dict[str, Path], persistence_csi_m: float
) -> None:
    model, args, epochs, lr = LEARNED[run]
    out = train(data, run, model, args, epochs, lr)
    score = csi_m(data, predict(data, run, model, args, out / "best.pt"))
    assert 0.0 < persistence_csi_m < 1.0
    assert score > persistence_csi_m, (run, score, persistence_csi_m)


def test_seed_sgt_learns(data: dict[str, Path]) -> None:
    """The seed's SGT, built as its authors did, is not held to beat persistence here: its
    decoder sees only the 1/4-resolution features (an 8 x 8 grid at 32 x 32) and starts from
    a Sigmoid at VIL 127 everywhere, so 28 steps leave it far from persistence (CSI-M about
    0.07 to 0.11 against persistence's 0.24 in the runs made while writing this). It must
    learn: its validation loss (the seed's loss) falls to under 60% of the first epoch's, and
    its forecasts hit storms (CSI-M above 0)."""
    out = train(data, "sgt", "sgt", SGT_ARGS, 4, 2e-3)
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics["val_loss"].min() < 0.6 * metrics["val_loss"].iloc[0], metrics["val_loss"]
    assert csi_m(data, predict(data, "sgt", "sgt", SGT_ARGS, out / "best.pt")) > 0.0
