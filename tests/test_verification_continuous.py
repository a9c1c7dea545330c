"""MSE, MAE, SSIM and the bootstrap intervals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from stormfusion.verification.accumulator import ScoreAccumulator
from stormfusion.verification.bootstrap import (
    bootstrap_weights,
    csi_intervals,
    paired_difference,
    resample_counts,
)
from stormfusion.verification.contingency import ContingencyCounts
from stormfusion.verification.continuous import ContinuousSums, ssim


def test_mse_mae_known_answer() -> None:
    truth = torch.zeros(2, 2, 4, 4)
    fcst = torch.zeros(2, 2, 4, 4)
    fcst[:, 0] = 10.0  # lead 0: error 10 everywhere
    fcst[0, 1, 0, 0] = 255.0  # lead 1: one pixel of one sample off by 255
    sums = ContinuousSums.init(2, with_ssim=False).accumulate(fcst, truth, ["a", "b"])
    s = sums.compute().overall
    n = 2 * 2 * 16
    assert s["mse"] == pytest.approx((2 * 16 * 100 + 255**2) / n)
    assert s["mae"] == pytest.approx((2 * 16 * 10 + 255) / n)
    assert s["mse_01"] == pytest.approx(s["mse"] / 255**2)
    assert s["mae_01"] == pytest.approx(s["mae"] / 255)
    assert sums.compute().by_lead["mse"].tolist() == pytest.approx([100.0, 255**2 / 32])
    assert np.isnan(s["ssim"]) and np.isnan(s["lpips"])


def test_ssim_matches_skimage_and_identity() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 24, 30)).astype(np.float64)
    b = np.clip(a + rng.normal(0, 40, a.shape), 0, 255)
    mine = ssim(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    ref = [
        structural_similarity(
            a[i],
            b[i],
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
        )
        for i in range(3)
    ]
    assert mine == pytest.approx(ref, abs=1e-10)
    assert ssim(torch.from_numpy(a), torch.from_numpy(a)).numpy() == pytest.approx(1.0)


def test_continuous_merge_equals_whole() -> None:
    rng = np.random.default_rng(1)
    f = torch.from_numpy(rng.uniform(0, 255, (4, 2, 16, 16)))
    o = torch.from_numpy(rng.uniform(0, 254, (4, 2, 16, 16)))
    ids = ["x", "y", "x", "z"]
    whole = ContinuousSums.init(2).accumulate(f, o, ids).compute()
    a = ContinuousSums.init(2).accumulate(f[:2], o[:2], ids[:2])
    b = ContinuousSums.init(2).accumulate(f[2:], o[2:], ids[2:])
    merged = a.merge(b).compute()
    assert merged.overall["mse"] == pytest.approx(whole.overall["mse"])
    assert merged.overall["ssim"] == pytest.approx(whole.overall["ssim"])


def _event_counts(seed: int, n_events: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    counts = ContingencyCounts.init(2)
    for e in range(n_events):
        o = torch.from_numpy(rng.gamma(0.7, 70.0, (1, 2, 16, 16)).clip(0, 254))
        f = (o + torch.from_numpy(rng.normal(0, 40, o.shape))).clip(0, 255)
        counts.accumulate(f, o, [f"e{e:02d}"])
    return counts.table


def test_bootstrap_weights_are_seeded_resamples() -> None:
    w = bootstrap_weights(7, 50, seed=3)
    assert w.shape == (50, 7) and (w.sum(axis=1) == 7).all()
    assert np.array_equal(w, bootstrap_weights(7, 50, seed=3))
    assert not np.array_equal(w, bootstrap_weights(7, 50, seed=4))
    counts = _event_counts(0, 7)
    # resampled counts are the sums of the drawn events
    rng = np.random.default_rng(3)
    draws = rng.integers(0, 7, size=(50, 7))
    assert np.array_equal(resample_counts(counts, w)[5], counts[draws[5]].sum(axis=0))


def test_csi_intervals_bracket_the_estimate() -> None:
    counts = _event_counts(0)
    ci = csi_intervals(counts, bootstrap_weights(counts.shape[0], 300, seed=0))
    assert ci.csi_m.lo <= ci.csi_m.value <= ci.csi_m.hi
    assert ci.csi_m.hi - ci.csi_m.lo > 0
    for k in range(3):  # the common thresholds have data in every replicate
        assert ci.csi[k].lo <= ci.csi[k].value <= ci.csi[k].hi
    none = csi_intervals(counts, None)
    assert none.csi_m.value == ci.csi_m.value and np.isnan(none.csi_m.lo)


def test_paired_difference() -> None:
    model, reference = _event_counts(0), _event_counts(1)
    w = bootstrap_weights(model.shape[0], 200, seed=0)
    same = paired_difference(model, model, w)
    assert same.csi_m.value == 0.0 and same.csi_m.lo == 0.0 and same.csi_m.hi == 0.0
    diff = paired_difference(model, reference, w)
    a, b = csi_intervals(model, w), csi_intervals(reference, w)
    assert diff.csi_m.value == pytest.approx(a.csi_m.value - b.csi_m.value)
    assert diff.csi_m.lo <= diff.csi_m.value <= diff.csi_m.hi


def test_saved_state_gives_the_same_numbers_to_the_last_digit(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    acc = ScoreAccumulator.init([5, 10])
    for event in ("S9", "S1", "S5", "S3"):  # not in id order: the state file sorts them
        o = torch.from_numpy(rng.uniform(0, 254, (2, 2, 16, 16)))
        f = (o + torch.from_numpy(rng.normal(0, 30, o.shape))).clamp(0, 255)
        acc.accumulate(f, o, [event, event])
    acc.save(tmp_path / "state.npz")
    again = ScoreAccumulator.load(tmp_path / "state.npz")
    assert json.dumps(again.summary()) == json.dumps(acc.summary())
