"""The forecast contract: registry, shapes, ranges and input checks of every model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stormfusion.data.sevir import STUDY_MODALITIES
from stormfusion.errors import StormFusionError
from stormfusion.models import MODELS, ForecastModel, get_model, list_models

#: Small constructor arguments, so every model runs in well under a second on CPU.
SMALL: dict[str, dict[str, object]] = {
    "persistence": {},
    "optical_flow": {},
    "unet2d": {"widths": [4, 8, 16]},
    "convlstm": {"hidden_channels": [8, 8]},
    "unet2d_stage4": {"widths": [4, 8, 16]},
    "sgt": {
        "hidden_dim": 16,
        "encoder_width": 8,
        "gnn_layers": 2,
        "gnn_heads": 2,
        "transformer_layers": 1,
        "transformer_heads": 2,
        "patch_size": 2,
        "edge_hidden": 8,
    },
    "sgt_advect": {
        "hidden_dim": 16,
        "encoder_channels": 8,
        "gnn_layers": 2,
        "transformer_layers": 1,
        "heads": 2,
        "patch_size": 2,
        "min_separation": 3,
    },
}
#: Models that predict a residual over persistence (the seed's predict absolute VIL).
RESIDUAL = ["unet2d", "convlstm", "sgt_advect"]
LEARNED = {*RESIDUAL, "sgt", "unet2d_stage4"}


def make_batch(b: int = 2, t_in: int = 4, size: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    """Every study modality as the loader gives it: stored units at native resolution
    (VIL size uint8, IR size / 2 int16, lightning size / 8 int32), a few bright VIL spots."""
    g = torch.Generator().manual_seed(seed)
    vil = torch.rand(b, t_in, size, size, generator=g) * 60
    vil[:, :, size // 4, size // 4] = 220.0
    vil[:, :, 3 * size // 4, size // 2] = 160.0
    half, eighth = size // 2, size // 8
    return {
        "vil": vil.to(torch.uint8),
        "ir069": (-4000 + 500 * torch.rand(b, t_in, half, half, generator=g)).to(torch.int16),
        "ir107": (-1000 + 500 * torch.rand(b, t_in, half, half, generator=g)).to(torch.int16),
        "lght": torch.poisson(torch.ones(b, t_in, eighth, eighth), generator=g).to(torch.int32),
    }


def test_registry_lists_the_models() -> None:
    assert list_models() == [
        "convlstm",
        "optical_flow",
        "persistence",
        "sgt",
        "sgt_advect",
        "unet2d",
        "unet2d_stage4",
    ]
    assert all(issubclass(MODELS.get(name), ForecastModel) for name in list_models())


def test_unknown_model_name_lists_valid_names() -> None:
    with pytest.raises(StormFusionError, match="valid names: convlstm, optical_flow"):
        get_model("transformer9000")


@pytest.mark.parametrize("name", list_models())
def test_every_model_returns_contract_shape_and_range(name: str) -> None:
    """Every registered model (a new one fails here until it has small arguments in SMALL)."""
    torch.manual_seed(0)
    model = get_model(name, input_frames=4, output_frames=3, **SMALL[name]).eval()
    inputs = make_batch()
    mask = torch.ones(2, 4)
    mask[1, 1:] = 0.0  # second sample: only VIL present
    for m in ("ir069", "ir107", "lght"):
        inputs[m][1] = 0.0
    out = model.forecast(inputs, mask)
    assert out.shape == (2, 3, 32, 32)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert float(out.min()) >= 0.0 and float(out.max()) <= 255.0
    assert model.trainable == (name in LEARNED)


@pytest.mark.parametrize("name", RESIDUAL)
def test_learned_models_start_close_to_persistence(name: str) -> None:
    """Residual parametrisation: at initialisation the forecast is about the last frame."""
    torch.manual_seed(0)
    model = get_model(name, input_frames=4, output_frames=2, **SMALL[name]).eval()
    inputs = make_batch(b=1)
    mask = torch.ones(1, 4)
    persistence = get_model("persistence", input_frames=4, output_frames=2)(inputs, mask)
    out = model.forecast(inputs, mask)
    assert float((out - persistence).abs().mean()) < 5.0


@pytest.mark.parametrize("name", ["unet2d", "convlstm"])
def test_baselines_take_all_modalities_with_mask(name: str) -> None:
    model = get_model(
        name, input_frames=4, output_frames=2, modalities=list(STUDY_MODALITIES), **SMALL[name]
    )
    inputs = make_batch()
    loss, terms = model.training_loss(inputs, torch.ones(2, 4), torch.full((2, 2, 32, 32), 50.0))
    loss.backward()
    assert set(terms) == {"mse"} and terms["mse"] > 0


def test_wrong_shapes_and_missing_modalities_are_clear_errors() -> None:
    model = get_model("unet2d", input_frames=4, output_frames=2, **SMALL["unet2d"])
    inputs = make_batch()
    with pytest.raises(StormFusionError, match="expected \\(2, 4, n, n\\)"):
        model({"vil": inputs["vil"][:, :3]}, torch.ones(2, 4))
    with pytest.raises(StormFusionError, match="'vil' has shape \\(2, 4, 32, 30\\)"):
        model({"vil": inputs["vil"][..., :30]}, torch.ones(2, 4))
    with pytest.raises(StormFusionError, match="mask has shape"):
        model(inputs, torch.ones(2, 3))
    sgt = get_model("sgt_advect", input_frames=4, output_frames=2, **SMALL["sgt_advect"])
    with pytest.raises(StormFusionError, match=r"needs input modalities \['lght'\]"):
        sgt({k: v for k, v in inputs.items() if k != "lght"}, torch.ones(2, 4))
    with pytest.raises(StormFusionError, match="divisible by 16"):
        sgt({k: v[..., :24, :24] for k, v in make_batch(size=24).items()}, torch.ones(2, 4))
    with pytest.raises(StormFusionError, match="unknown modalities"):
        get_model("unet2d", modalities=["vil", "radar"])


def test_prepare_inputs_regrids_on_the_vil_grid_and_normalises() -> None:
    """The one regridding helper: IR 16 -> 32 bilinear (half-pixel centres) then
    normalised; lightning 4 -> 32 keeps every frame's flash total (64 pixels share each
    cell's count); VIL at its own grid only normalised; float32 whatever came in."""
    model = get_model("unet2d", input_frames=4, output_frames=2, modalities=STUDY_MODALITIES)
    batch = make_batch()
    out = model.prepare_inputs(batch, torch.ones(2, 4))
    assert {m: tuple(x.shape) for m, x in out.items()} == {m: (2, 4, 32, 32) for m in batch}
    assert all(x.dtype == torch.float32 for x in out.values())
    torch.testing.assert_close(out["vil"], (batch["vil"].float() - 33.44) / 47.54)
    ir = F.interpolate(batch["ir069"].float(), size=(32, 32), mode="bilinear")
    torch.testing.assert_close(out["ir069"], (ir + 3683.58) / 1174.68)
    counts = out["lght"] * 0.60517 + 0.0299  # back to counts per pixel
    torch.testing.assert_close(
        counts.sum((-2, -1)), batch["lght"].float().sum((-2, -1)), rtol=1e-5, atol=1e-3
    )
    spread = batch["lght"].float().repeat_interleave(8, -1).repeat_interleave(8, -2) / 64
    torch.testing.assert_close(counts, spread, rtol=1e-5, atol=1e-5)
    smaller = model.prepare_inputs(batch, torch.ones(2, 4), size=16)
    assert smaller["ir069"].shape == (2, 4, 16, 16)
    torch.testing.assert_close(smaller["ir069"], (batch["ir069"].float() + 3683.58) / 1174.68)


@pytest.mark.parametrize("name", sorted(set(SMALL) - {"unet2d_stage4"}))  # that one: VIL only
def test_native_and_full_resolution_batches_agree(name: str) -> None:
    """A batch at native resolution and the same batch already on the VIL grid (stored
    units, regridded by hand) give the same forecast: models regrid on their own."""
    torch.manual_seed(0)
    model = get_model(
        name, input_frames=4, output_frames=2, modalities=STUDY_MODALITIES, **SMALL[name]
    )
    model.eval()
    native = make_batch()
    full = {m: x.float() for m, x in native.items()}
    full["ir069"] = F.interpolate(full["ir069"], size=(32, 32), mode="bilinear")
    full["ir107"] = F.interpolate(full["ir107"], size=(32, 32), mode="bilinear")
    full["lght"] = full["lght"].repeat_interleave(8, -1).repeat_interleave(8, -2) / 64
    mask = torch.ones(2, 4)
    torch.testing.assert_close(
        model.forecast(native, mask), model.forecast(full, mask), rtol=1e-4, atol=1e-3
    )
