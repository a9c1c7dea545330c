"""The seed's Stage-4 UNet (``unet2d_stage4``): its parameter count (a published fact of the
seed's code), its layer order, absolute output on VIL / 255 and its input checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stormfusion.errors import StormFusionError
from stormfusion.models import get_model


def test_parameter_count_at_12_to_1() -> None:
    model = get_model("unet2d_stage4", input_frames=12, output_frames=1)
    assert sum(p.numel() for p in model.parameters()) == 7_768_577


def test_blocks_are_conv_relu_batchnorm_and_upsampling_is_transposed() -> None:
    model = get_model("unet2d_stage4", output_frames=1)
    first = model.down[0]
    assert [type(m) for m in first] == [nn.Conv2d, nn.ReLU, nn.BatchNorm2d] * 2
    assert all(conv.bias is not None for conv in list(first)[::3])
    assert [b[0].out_channels for b in model.down] == [32, 64, 128, 256, 512]
    assert all(isinstance(u, nn.ConvTranspose2d) and u.stride == (2, 2) for u in model.upsample)


def test_output_is_absolute_vil_not_a_residual() -> None:
    """With the head's weights zero, the forecast is 255 * bias whatever the input."""
    model = get_model("unet2d_stage4", input_frames=4, output_frames=2, widths=[4, 8, 16])
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([0.2, 0.9]))
    vil = torch.rand(2, 4, 16, 16) * 250
    out = model.eval()({"vil": vil}, torch.ones(2, 4))
    assert out.shape == (2, 2, 16, 16)
    torch.testing.assert_close(out[:, 0], torch.full((2, 16, 16), 51.0))
    torch.testing.assert_close(out[:, 1], torch.full((2, 16, 16), 229.5))


def test_reads_vil_over_255() -> None:
    """The first convolution sees VIL / 255: a 1-input-frame net with an identity path."""
    model = get_model("unet2d_stage4", input_frames=1, output_frames=1, widths=[1, 1])
    vil = torch.full((1, 1, 4, 4), 102.0)
    seen: list[torch.Tensor] = []
    model.down[0][0].register_forward_hook(lambda m, args, out: seen.append(args[0]))
    model({"vil": vil.to(torch.uint8)}, torch.ones(1, 4))
    torch.testing.assert_close(seen[0], torch.full((1, 1, 4, 4), 0.4))


def test_input_checks() -> None:
    with pytest.raises(StormFusionError, match="reads VIL only"):
        get_model("unet2d_stage4", modalities=["vil", "ir069"])
    model = get_model("unet2d_stage4", input_frames=2, output_frames=1)
    with pytest.raises(StormFusionError, match="divisible by 16"):
        model({"vil": torch.zeros(1, 2, 24, 24)}, torch.ones(1, 4))
