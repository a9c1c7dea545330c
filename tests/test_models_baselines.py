"""Known answers of the baselines: persistence, optical flow, UNet2D, ConvLSTM."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stormfusion.errors import StormFusionError
from stormfusion.models import get_model
from stormfusion.models.optical_flow import lk_extrapolate

SIZE = 64
#: Blob motion in pixels per frame, (x along columns, y along rows).
VELOCITY = (1.5, -1.0)


def blob_frames(n: int) -> np.ndarray:
    """A Gaussian blob (peak 200, sigma 5 px) moving by VELOCITY each frame: (n, 64, 64)."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    frames = []
    for t in range(n):
        cx, cy = 20 + VELOCITY[0] * t, 40 + VELOCITY[1] * t
        frames.append(200 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 5.0**2)))
    return np.stack(frames)


def centroid(frame: np.ndarray) -> tuple[float, float]:
    yy, xx = np.mgrid[0 : frame.shape[0], 0 : frame.shape[1]]
    total = frame.sum()
    return float((frame * xx).sum() / total), float((frame * yy).sum() / total)


def test_persistence_repeats_the_last_frame_exactly() -> None:
    vil = torch.randint(0, 255, (2, 5, 16, 16)).float()
    model = get_model("persistence", input_frames=5, output_frames=3)
    out = model.forecast({"vil": vil.to(torch.uint8)}, torch.ones(2, 4))
    expected = vil[:, -1:].expand(-1, 3, -1, -1)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)


def test_optical_flow_extrapolates_a_translated_blob() -> None:
    """Known answer: the blob's centroid lands within 0.1 px of its true place at every lead,
    and the mean absolute error is under a tenth of persistence's."""
    frames = blob_frames(18)
    inputs = {"vil": torch.tensor(frames[None, :12], dtype=torch.float32)}
    model = get_model("optical_flow", input_frames=12, output_frames=6)
    out = model.forecast(inputs, torch.ones(1, 4))[0].numpy()
    truth = frames[12:]
    for lead in range(6):
        cx, cy = centroid(out[lead])
        assert abs(cx - (20 + VELOCITY[0] * (12 + lead))) < 0.1
        assert abs(cy - (40 + VELOCITY[1] * (12 + lead))) < 0.1
    flow_mae = np.abs(out - truth).mean()
    persistence_mae = np.abs(frames[11][None] - truth).mean()
    assert flow_mae < 0.1 * persistence_mae


def test_optical_flow_clear_sky_and_process_pool() -> None:
    assert not lk_extrapolate(np.zeros((3, 32, 32)), 4).any()
    frames = blob_frames(12)
    batch = np.stack([frames, np.roll(frames, 5, axis=2)])
    inputs = {"vil": torch.tensor(batch, dtype=torch.float32)}
    serial = get_model("optical_flow", output_frames=2).forecast(inputs, torch.ones(2, 4))
    pooled = get_model("optical_flow", output_frames=2, workers=2).forecast(
        inputs, torch.ones(2, 4)
    )
    torch.testing.assert_close(serial, pooled)


def test_optical_flow_rejects_bad_arguments() -> None:
    with pytest.raises(StormFusionError, match="motion_frames=1"):
        get_model("optical_flow", motion_frames=1)
    with pytest.raises(StormFusionError, match="workers=0"):
        get_model("optical_flow", workers=0)


def test_unet2d_levels_and_skips() -> None:
    model = get_model("unet2d", input_frames=12, output_frames=6)
    assert model.widths == (32, 64, 128, 256)
    assert [block[0][0].out_channels for block in model.down] == [32, 64, 128, 256]
    assert model.down[0][0][0].in_channels == 12
    # decoder levels see the upsampled features plus the skip of the same level
    assert [block[0][0].in_channels for block in model.up] == [256 + 128, 128 + 64, 64 + 32]


def test_convlstm_encoder_forecaster_structure_and_learning() -> None:
    """The forecaster has no input at its top layer, and a few steps of training reduce the
    loss on a fixed batch (the gradients are right)."""
    torch.manual_seed(0)
    model = get_model("convlstm", input_frames=6, output_frames=2, hidden_channels=[8, 12])
    assert model.forecaster[1].input_conv is None
    assert model.forecaster[0].input_conv is not None
    assert model.forecaster[0].input_conv.in_channels == 12
    frames = blob_frames(8)
    inputs = {"vil": torch.tensor(frames[None, :6], dtype=torch.float32)}
    target = torch.tensor(frames[None, 6:], dtype=torch.float32)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss, _ = model.training_loss(inputs, torch.ones(1, 4), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]
