"""Missing truth (255) left out of every score, HSS, MS-SSIM and the conservation error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view
from pysteps.verification.detcatscores import det_cat_fct
from skimage.metrics import structural_similarity

from stormfusion.verification.contingency import ContingencyCounts
from stormfusion.verification.continuous import ContinuousSums, ms_ssim, ssim
from stormfusion.verification.pooling import Pooling
from stormfusion.verification.scores import CATEGORICAL_SCORES, hss

M = 255.0  # missing


def _hand_case() -> tuple[torch.Tensor, torch.Tensor]:
    truth = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    fcst = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    truth[0, 0, 0] = torch.tensor([100.0, M, 0.0, 0.0])
    truth[0, 0, 1] = torch.tensor([100.0, 100.0, 0.0, M])
    fcst[0, 0, 0] = torch.tensor([100.0, 100.0, 100.0, 0.0])
    fcst[0, 0, 1] = torch.tensor([0.0, 100.0, 0.0, 100.0])
    return fcst, truth


def test_missing_truth_is_not_counted_hand_built() -> None:
    fcst, truth = _hand_case()
    c = ContingencyCounts.init(1, thresholds=(74,)).accumulate(fcst, truth).totals()[0, 0]
    # (0,0) hit, (0,2) false alarm, (1,0) miss, (1,1) hit, 10 quiet pixels; the two
    # forecasts over missing truth are neither hits nor false alarms
    assert c.tolist() == [2, 1, 1, 10]
    pooled = ContingencyCounts.init(1, thresholds=(74,), pooling=Pooling("max", 2))
    # both upper 2 x 2 cells hold a missing pixel: left out whole; the lower two are quiet
    assert pooled.accumulate(fcst, truth).totals()[0, 0].tolist() == [0, 0, 0, 2]
    sums = ContinuousSums.init(1, with_ssim=False).accumulate(fcst, truth)
    s = sums.compute()
    assert s.overall["mse"] == pytest.approx(2 * 100.0**2 / 14)
    assert s.overall["mae"] == pytest.approx(2 * 100.0 / 14)
    assert s.n_excluded_pixels == 2
    assert s.n_skipped_frames == 1
    # forecast mass over valid pixels is 300, as is the truth's: no conservation error
    # (counting the forecasts over missing pixels would give 500 vs 300)
    assert s.overall["conservation"] == pytest.approx(0.0)


def test_frames_with_missing_truth_are_skipped_by_ssim() -> None:
    rng = np.random.default_rng(5)
    truth = torch.from_numpy(rng.uniform(0, 254, (1, 2, 16, 16)))
    fcst = (truth + torch.from_numpy(rng.normal(0, 20, truth.shape))).clamp(0, 255)
    truth[0, 0, 3, 3] = M
    s = ContinuousSums.init(2).accumulate(fcst, truth).compute()
    assert np.isnan(s.by_lead["ssim"][0])
    assert s.by_lead["ssim"][1] == pytest.approx(float(ssim(fcst[0, 1:], truth[0, 1:])[0]))
    assert s.overall["ssim"] == pytest.approx(s.by_lead["ssim"][1])
    assert s.n_skipped_frames == 1 and s.n_excluded_pixels == 1


def test_hss_textbook_and_pysteps() -> None:
    # H=3, M=2, F=1, N=4: HSS = 2 (3*4 - 2*1) / ((3+2)(2+4) + (3+1)(1+4)) = 20 / 50
    assert hss(np.array([3, 2, 1, 4])) == pytest.approx(0.4)
    assert "hss" in CATEGORICAL_SCORES
    rng = np.random.default_rng(7)
    truth = rng.gamma(0.6, 60.0, size=(2, 3, 24, 24)).clip(0, 254)
    fcst = (truth + rng.normal(0, 30, truth.shape)).clip(0, 255)
    s = ContingencyCounts.init(3).accumulate(torch.from_numpy(fcst), torch.from_numpy(truth))
    scores = s.compute()
    for k, t in enumerate(scores.thresholds):
        ref = det_cat_fct(fcst, truth, t, ["HSS"])  # continuous values: > and >= agree
        assert scores.overall["hss"][k] == pytest.approx(ref["HSS"], rel=1e-12)


def test_conservation_error_known_answer() -> None:
    truth = torch.zeros(2, 1, 4, 4)
    fcst = torch.zeros(2, 1, 4, 4)
    truth[0, 0, 0, 0] = 100.0  # sample 0: forecast 50 too much
    fcst[0, 0, 0, 0] = 150.0
    truth[1, 0, 1, 1] = 100.0  # sample 1: 50 too little; must not cancel sample 0
    fcst[1, 0, 1, 1] = 50.0
    s = ContinuousSums.init(1, with_ssim=False).accumulate(fcst, truth, ["a", "b"]).compute()
    assert s.overall["conservation"] == pytest.approx((50 + 50) / 200)


# ---------------------------------------------------------------- MS-SSIM, independently

WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _window() -> np.ndarray:
    x = np.arange(-5, 6, dtype=np.float64)
    g = np.exp(-0.5 * (x / 1.5) ** 2)
    g /= g.sum()
    return np.outer(g, g)


def _terms(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean SSIM and mean contrast-structure over the valid 11 x 11 window positions."""
    w = _window()

    def mean(z: np.ndarray) -> np.ndarray:
        return np.einsum("ijkl,kl->ij", sliding_window_view(z, (11, 11)), w)

    ma, mb = mean(a), mean(b)
    va, vb, cab = mean(a * a) - ma**2, mean(b * b) - mb**2, mean(a * b) - ma * mb
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    cs = (2 * cab + c2) / (va + vb + c2)
    lum = (2 * ma * mb + c1) / (ma**2 + mb**2 + c1)
    return float((lum * cs).mean()), float(cs.mean())


def _halve(z: np.ndarray) -> np.ndarray:
    z = np.pad(z, ((0, z.shape[0] % 2), (0, z.shape[1] % 2)), mode="edge")
    return z.reshape(z.shape[0] // 2, 2, z.shape[1] // 2, 2).mean(axis=(1, 3))


def _reference_ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    out = 1.0
    for level, weight in enumerate(WEIGHTS):
        value, cs = _terms(a, b)
        ski = structural_similarity(
            a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
        )
        assert value == pytest.approx(ski, abs=1e-10)  # the SSIM of each scale is skimage's
        out *= max(value if level == len(WEIGHTS) - 1 else cs, 0.0) ** weight
        a, b = _halve(a), _halve(b)
    return out


def test_ms_ssim_against_an_independent_implementation() -> None:
    rng = np.random.default_rng(11)
    size = 180  # 180 -> 90 -> 45 -> 23 -> 12: odd sides are padded on the way
    yy, xx = np.mgrid[0:size, 0:size]
    truth = np.stack(
        [
            200 * np.exp(-((yy - c) ** 2 + (xx - c) ** 2) / 800.0)
            + rng.uniform(0, 30, (size, size))
            for c in (60, 100)
        ]
    ).round()
    fcst = np.clip(np.roll(truth, 3, axis=-1) + rng.normal(0, 15, truth.shape), 0, 255).round()
    mine = ms_ssim(torch.from_numpy(fcst), torch.from_numpy(truth)).numpy()
    ref = [_reference_ms_ssim(fcst[i], truth[i]) for i in range(2)]
    assert mine == pytest.approx(ref, rel=1e-9)
    assert ms_ssim(torch.from_numpy(truth), torch.from_numpy(truth)).numpy() == pytest.approx(1.0)
    assert 0.0 < mine.min() < 1.0


def test_continuous_sums_carry_ms_ssim_on_large_frames() -> None:
    rng = np.random.default_rng(12)
    truth = torch.from_numpy(rng.uniform(0, 254, (1, 1, 176, 176)).round())
    fcst = (truth + torch.from_numpy(rng.normal(0, 10, truth.shape))).clamp(0, 255)
    s = ContinuousSums.init(1).accumulate(fcst, truth).compute()
    # MS-SSIM is taken of the forecast rounded to integers (uint8), as published
    want = float(ms_ssim(torch.round(fcst[0]), truth[0])[0])
    assert s.overall["msssim"] == pytest.approx(want, rel=1e-12)
    small = ContinuousSums.init(1).accumulate(fcst[..., :64, :64], truth[..., :64, :64])
    assert np.isnan(small.compute().overall["msssim"])  # no fifth scale below 176 px
