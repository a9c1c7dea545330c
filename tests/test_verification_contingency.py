"""Contingency counts, categorical scores, pooled CSI and the two CSI-M variants."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pysteps.verification.detcatscores import det_cat_fct

from stormfusion.errors import StormFusionError
from stormfusion.verification.contingency import ContingencyCounts, count_batch
from stormfusion.verification.pooling import Pooling
from stormfusion.verification.scores import bias, csi, csi_m_per_lead, csi_m_pooled, pod, sucr

THRESHOLDS = (16, 74, 133, 160, 181, 219)


def _brute(forecast: np.ndarray, truth: np.ndarray, t: float) -> tuple[int, int, int, int]:
    """Counts over the truth pixels that are data (255 = missing is left out)."""
    ok = truth <= 254
    f, o = forecast[ok] >= t, truth[ok] >= t
    return int((f & o).sum()), int((~f & o).sum()), int((f & ~o).sum()), int((~f & ~o).sum())


def test_textbook_table() -> None:
    # at threshold 74: 3 hits, 2 misses, 1 false alarm, 4 correct negatives
    truth = np.array([100, 100, 100, 100, 100, 0, 0, 0, 0, 0], dtype=np.uint8)
    fcst = np.array([90, 80, 74, 10, 73, 200, 0, 50, 73, 0], dtype=np.uint8)
    counts = ContingencyCounts.init(1, thresholds=(74,))
    counts.accumulate(
        torch.from_numpy(fcst).reshape(1, 1, 1, 10), torch.from_numpy(truth).reshape(1, 1, 1, 10)
    )
    c = counts.totals()[0, 0]
    assert c.tolist() == [3, 2, 1, 4]
    assert pod(c) == pytest.approx(0.6)
    assert sucr(c) == pytest.approx(0.75)
    assert csi(c) == pytest.approx(0.5)
    assert bias(c) == pytest.approx(0.8)
    s = counts.compute()
    assert s.csi_m == pytest.approx(0.5)


def test_undefined_scores_are_nan() -> None:
    c = np.array([0, 0, 0, 100])
    assert np.isnan(csi(c)) and np.isnan(pod(c)) and np.isnan(sucr(c)) and np.isnan(bias(c))


@pytest.mark.parametrize("dtype", ["uint8", "float"])
def test_agrees_with_pysteps(dtype: str) -> None:
    rng = np.random.default_rng(1)
    truth = rng.gamma(0.6, 60.0, size=(3, 4, 32, 32)).clip(0, 254)
    fcst = (truth + rng.normal(0, 30, truth.shape)).clip(0, 255)
    if dtype == "uint8":
        truth, fcst = np.round(truth).astype(np.uint8), np.round(fcst).astype(np.uint8)
    counts = ContingencyCounts.init(4).accumulate(torch.from_numpy(fcst), torch.from_numpy(truth))
    s = counts.compute()
    for k, t in enumerate(THRESHOLDS):
        # pysteps counts value > thr: on integers, >= t is > t - 0.5; on continuous random
        # values ties have probability zero
        thr = t - 0.5 if dtype == "uint8" else float(t)
        ref = det_cat_fct(
            fcst.astype(float), truth.astype(float), thr, ["POD", "FAR", "CSI", "BIAS"]
        )
        assert s.overall["pod"][k] == pytest.approx(ref["POD"], rel=1e-12)
        assert s.overall["sucr"][k] == pytest.approx(1.0 - ref["FAR"], rel=1e-12)
        assert s.overall["csi"][k] == pytest.approx(ref["CSI"], rel=1e-12)
        assert s.overall["bias"][k] == pytest.approx(ref["BIAS"], rel=1e-12)


def test_counts_match_brute_force_per_lead_and_event() -> None:
    rng = np.random.default_rng(2)
    f = rng.integers(0, 256, size=(5, 3, 16, 16)).astype(np.uint8)
    o = rng.integers(0, 256, size=(5, 3, 16, 16)).astype(np.uint8)
    events = ["a", "b", "a", "c", "b"]
    counts = ContingencyCounts.init(3).accumulate(torch.from_numpy(f), torch.from_numpy(o), events)
    assert counts.events == ["a", "b", "c"]
    for e_idx, e in enumerate(counts.events):
        rows = [i for i, x in enumerate(events) if x == e]
        for k, t in enumerate(THRESHOLDS):
            for lead in range(3):
                assert tuple(counts.table[e_idx, k, lead]) == _brute(
                    f[rows, lead], o[rows, lead], t
                )


def test_merging_halves_equals_whole() -> None:
    rng = np.random.default_rng(3)
    f = torch.from_numpy(rng.uniform(0, 255, size=(6, 2, 16, 16)))
    o = torch.from_numpy(rng.uniform(0, 254, size=(6, 2, 16, 16)))
    events = ["e1", "e2", "e1", "e3", "e3", "e4"]
    for pooling in (None, Pooling("max", 4), Pooling("avg", 4)):
        whole = ContingencyCounts.init(2, pooling=pooling).accumulate(f, o, events)
        first = ContingencyCounts.init(2, pooling=pooling).accumulate(f[:3], o[:3], events[:3])
        second = ContingencyCounts.init(2, pooling=pooling).accumulate(f[3:], o[3:], events[3:])
        merged = first.merge(second)
        assert np.array_equal(merged.totals(), whole.totals())
        order = [merged.events.index(e) for e in whole.events]
        assert np.array_equal(merged.table[order], whole.table)
        assert merged.compute().csi_m == whole.compute().csi_m


def test_merge_refuses_different_thresholds() -> None:
    with pytest.raises(StormFusionError, match="cannot merge"):
        ContingencyCounts.init(2).merge(ContingencyCounts.init(2, thresholds=(16, 74)))


def test_integer_and_float_inputs_count_alike() -> None:
    rng = np.random.default_rng(4)
    f = rng.integers(0, 256, size=(2, 2, 8, 8)).astype(np.uint8)
    o = rng.integers(0, 255, size=(2, 2, 8, 8)).astype(np.uint8)
    a = count_batch(torch.from_numpy(f), torch.from_numpy(o), THRESHOLDS)
    b = count_batch(torch.from_numpy(f).float(), torch.from_numpy(o).double(), THRESHOLDS)
    assert torch.equal(a, b)
    # a threshold between integers goes through the category path
    odd = count_batch(
        torch.from_numpy(f).float() + 0.25, torch.from_numpy(o).float(), (16.5, 100.0)
    )
    assert tuple(odd[0, 0].sum(0).tolist()) == _brute(f + 0.25, o.astype(float), 16.5)


def test_pooled_csi_hand_built() -> None:
    truth = torch.zeros(1, 1, 8, 8)
    fcst = torch.zeros(1, 1, 8, 8)
    truth[0, 0, 1, 1] = 200.0  # one storm pixel...
    fcst[0, 0, 2, 2] = 200.0  # ...forecast one pixel off, inside the same 4 x 4 block
    pixel = ContingencyCounts.init(1, thresholds=(181,)).accumulate(fcst, truth).compute()
    assert pixel.overall["csi"][0] == 0.0
    pooled = ContingencyCounts.init(1, thresholds=(181,), pooling=Pooling("max", 4))
    c = pooled.accumulate(fcst, truth).totals()[0, 0]
    assert c.tolist() == [1, 0, 0, 3]  # the block is a hit, the other three blocks are quiet
    # average pooling: the block mean must reach the threshold
    truth2 = torch.zeros(1, 1, 8, 8)
    truth2[0, 0, :4, :2] = 200.0  # block mean 100
    fcst2 = torch.zeros(1, 1, 8, 8)
    fcst2[0, 0, :4, :4] = 100.0  # block mean 100
    fcst2[0, 0, 4:, 4:] = 60.0  # block mean 60: below 74
    avg = ContingencyCounts.init(1, thresholds=(74, 133), pooling=Pooling("avg", 4))
    t = avg.accumulate(fcst2, truth2).totals()[:, 0]
    assert t[0].tolist() == [1, 0, 0, 3]
    assert t[1].tolist() == [0, 0, 0, 4]
    with pytest.raises(StormFusionError, match="not a multiple"):
        Pooling("max", 16).apply(torch.zeros(1, 1, 8, 8))
    assert Pooling.parse("max16") == Pooling("max", 16) and Pooling("avg", 4).name == "avg4"
    with pytest.raises(StormFusionError, match="unknown pooling"):
        Pooling("median", 4)


def test_csi_m_pooled_and_per_lead_differ() -> None:
    # lead 0: ten storm pixels, all hit; lead 1: one storm pixel, missed
    truth = torch.zeros(1, 2, 4, 4)
    fcst = torch.zeros(1, 2, 4, 4)
    truth[0, 0].view(-1)[:10] = 254.0
    fcst[0, 0].view(-1)[:10] = 254.0
    truth[0, 1, 0, 0] = 254.0
    s = ContingencyCounts.init(2).accumulate(fcst, truth).compute()
    assert s.csi_m == pytest.approx(10 / 11)  # as published: counts pooled over leads
    assert s.csi_m_per_lead == pytest.approx(0.5)  # mean of 1 and 0
    assert s.csi_m_by_lead.tolist() == pytest.approx([1.0, 0.0])
    counts = s.counts[None]
    assert csi_m_pooled(counts)[0] == pytest.approx(10 / 11)
    assert csi_m_per_lead(counts)[0] == pytest.approx(0.5)


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(StormFusionError, match="same shape"):
        count_batch(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 5), THRESHOLDS)
    with pytest.raises(StormFusionError, match="ascending"):
        count_batch(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), (74, 16))
    with pytest.raises(StormFusionError, match="3 leads"):
        ContingencyCounts.init(3).accumulate(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))


def test_out_of_range_and_fractional_values() -> None:
    x = torch.tensor([-3.0, -0.5, 15.99, 16.0, 300.0, 218.9, 219.0]).reshape(1, 1, 1, 7)
    observed = torch.full_like(x, 254.0)
    c = count_batch(x, observed, (16, 219))
    assert c[0, 0, 0, :2].tolist() == [4, 3]  # 16.0, 300, 218.9, 219 reach 16
    assert c[0, 1, 0, :2].tolist() == [2, 5]  # 300, 219 reach 219
