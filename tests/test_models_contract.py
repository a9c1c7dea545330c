"""The forecast contract: registry, shapes, ranges and input checks of every model."""

from __future__ import annotations

import pytest
import torch

from stormfusion.data.normalization import normalize
from stormfusion.data.sevir import STUDY_MODALITIES
from stormfusion.errors import StormFusionError
from stormfusion.models import MODELS, ForecastModel, get_model, list_models

#: Small constructor arguments, so every model runs in well under a second on CPU.
SMALL: dict[str, dict[str, object]] = {
    "persistence": {},
    "optical_flow": {},
    "unet2d": {"widths": [4, 8, 16]},
    "convlstm": {"hidden_channels": [8, 8]},
    "sgt": {
        "hidden_dim": 16,
        "encoder_channels": 8,
        "gnn_layers": 2,
        "transformer_layers": 1,
        "heads": 2,
        "patch_size": 2,
        "min_separation": 3,
    },
}


def make_batch(b: int = 2, t_in: int = 4, size: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    """Normalised inputs of every study modality with a few bright VIL spots."""
    g = torch.Generator().manual_seed(seed)
    vil = torch.rand(b, t_in, size, size, generator=g) * 60
    vil[:, :, size // 4, size // 4] = 220.0
    vil[:, :, 3 * size // 4, size // 2] = 160.0
    return {
        "vil": normalize("vil", vil),
        "ir069": normalize("ir069", -4000 + 500 * torch.rand(b, t_in, size, size, generator=g)),
        "ir107": normalize("ir107", -1000 + 500 * torch.rand(b, t_in, size, size, generator=g)),
        "lght": normalize("lght", torch.poisson(torch.ones(b, t_in, size, size))),
    }


def test_registry_lists_the_five_models() -> None:
    assert list_models() == ["convlstm", "optical_flow", "persistence", "sgt", "unet2d"]
    assert all(issubclass(MODELS.get(name), ForecastModel) for name in list_models())


def test_unknown_model_name_lists_valid_names() -> None:
    with pytest.raises(StormFusionError, match="valid names: convlstm, optical_flow"):
        get_model("transformer9000")


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_model_returns_contract_shape_and_range(name: str) -> None:
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
    assert model.trainable == (name in {"unet2d", "convlstm", "sgt"})


@pytest.mark.parametrize("name", ["unet2d", "convlstm", "sgt"])
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
    with pytest.raises(StormFusionError, match="expected \\(2, 4, 32, 32\\)"):
        model({"vil": inputs["vil"][:, :3]}, torch.ones(2, 4))
    with pytest.raises(StormFusionError, match="mask has shape"):
        model(inputs, torch.ones(2, 3))
    sgt = get_model("sgt", input_frames=4, output_frames=2, **SMALL["sgt"])
    with pytest.raises(StormFusionError, match=r"needs input modalities \['lght'\]"):
        sgt({k: v for k, v in inputs.items() if k != "lght"}, torch.ones(2, 4))
    with pytest.raises(StormFusionError, match="divisible by 16"):
        sgt({k: v[..., :24, :24] for k, v in inputs.items()}, torch.ones(2, 4))
    with pytest.raises(StormFusionError, match="unknown modalities"):
        get_model("unet2d", modalities=["vil", "radar"])
