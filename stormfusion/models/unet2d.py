"""UNet2D: the SEVIR paper's nowcasting baseline (input frames as channels).

Encoder-decoder with skip connections, widths 32-64-128-256 by default (three 2x poolings,
so H and W must be multiples of 8; the contract's multiples of 16 qualify). Each level is
two 3x3 conv + BN + ReLU; the decoder upsamples bilinearly, concatenates the skip and applies
two more. The head predicts, for each lead, a change of VIL (on the 0..1 scale) that is
added to the last observed frame: a residual over persistence, which trains much faster than
predicting VIL from scratch and keeps the output on the 0..255 scale.

The SEVIR paper's UNet reads VIL only, which is the default here; with several modalities
their frames are stacked as channels together with one constant mask plane per modality.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stormfusion.errors import StormFusionError
from stormfusion.models import MODELS
from stormfusion.models.base import VIL_SCALE, ForecastModel, last_vil
from stormfusion.models.layers import conv_bn_relu, init_small, stack_modalities


class _DoubleConv(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            conv_bn_relu(in_channels, out_channels), conv_bn_relu(out_channels, out_channels)
        )


@MODELS.register("unet2d")
class UNet2D(ForecastModel):
    """UNet over stacked input frames, (B, T_in * M [+ M], H, W) -> (B, T_out, H, W) VIL.

    Args:
        input_frames, output_frames: T_in and T_out.
        modalities: modalities read (default VIL only, as the SEVIR paper).
        widths: channels per level, coarsest last; ``len(widths) - 1`` poolings, so H and W
            must be multiples of ``2 ** (len(widths) - 1)``.
    """

    def __init__(
        self,
        input_frames: int = 12,
        output_frames: int = 6,
        modalities: Sequence[str] = ("vil",),
        widths: Sequence[int] = (32, 64, 128, 256),
    ) -> None:
        super().__init__(modalities, input_frames, output_frames)
        if "vil" not in self.modalities:
            raise StormFusionError("unet2d needs 'vil' in its modalities")
        widths = tuple(int(w) for w in widths)
        if len(widths) < 2 or min(widths) < 1:
            raise StormFusionError(
                f"unet2d argument widths={list(widths)} needs >= 2 positive ints"
            )
        self.widths = widths
        m = len(self.modalities)
        in_channels = input_frames * m + (m if m > 1 else 0)
        self.down = nn.ModuleList()
        previous = in_channels
        for width in widths:
            self.down.append(_DoubleConv(previous, width))
            previous = width
        self.up = nn.ModuleList(
            _DoubleConv(widths[i + 1] + widths[i], widths[i])
            for i in reversed(range(len(widths) - 1))
        )
        self.head = nn.Conv2d(widths[0], output_frames, 1)
        init_small(self.head)

    def forward(self, inputs: dict[str, Tensor], mask: Tensor) -> Tensor:
        inputs = self.prepare_inputs(inputs, mask)  # VIL grid, normalised
        _, h, w = self.check_inputs(inputs, mask)
        factor = 2 ** (len(self.widths) - 1)
        if h % factor or w % factor:
            raise StormFusionError(f"unet2d needs H and W divisible by {factor}; got {h} x {w}")
        x = stack_modalities(inputs, mask, self.modalities)
        skips: list[Tensor] = []
        for i, block in enumerate(self.down):
            if i > 0:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        skips.pop()
        for block in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return last_vil(inputs) + VIL_SCALE * self.head(x)
