"""UNet2D-Stage4: the seed study's Stage-4 baseline UNet, as its authors built it.

Frames as channels; each block is ``[3x3 conv (bias) - ReLU - BatchNorm] x 2``; widths 32,
64, 128, 256 on the way down with 2x2 max-pooling between, a 512-channel bottleneck block,
and back up with a 2x2 stride-2 transposed conv (bias), concatenation with the skip and a
block; a 1x1 conv head. The input is VIL / 255 (the prepared, normalised VIL
de-normalised) and the output absolute VIL / 255 (no
residual over persistence, no output activation). 7,768,577 parameters at 12 -> 1 frames.

Unlike our ``unet2d`` (the SEVIR paper's baseline: BatchNorm before ReLU, bilinear
upsampling, a residual over persistence), this one is kept as the seed built it so that
its Stage-4 numbers can be set beside ours (config/protocols/stage4.yaml).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stormfusion.data.normalization import denormalize
from stormfusion.errors import StormFusionError
from stormfusion.models import MODELS
from stormfusion.models.base import VIL_SCALE, ForecastModel


class _Block(nn.Sequential):
    """``[conv3x3 (bias) - ReLU - BN] x 2``: (B, C_in, H, W) -> (B, C_out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.BatchNorm2d(out_channels),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.BatchNorm2d(out_channels),
        )


@MODELS.register("unet2d_stage4")
class UNet2DStage4(ForecastModel):
    """The seed's Stage-4 UNet: (B, T_in, H, W) VIL -> (B, T_out, H, W) VIL, absolute.

    Args:
        input_frames, output_frames: T_in and T_out (the seed's Stage 4: 12 -> 1).
        modalities: VIL only (the seed's baseline reads nothing else).
        widths: channels on the way down, the bottleneck last (seed: 32, 64, 128, 256, 512);
            ``len(widths) - 1`` poolings, so H and W must be multiples of
            ``2 ** (len(widths) - 1)``.
    """

    def __init__(
        self,
        input_frames: int = 12,
        output_frames: int = 6,
        modalities: Sequence[str] = ("vil",),
        widths: Sequence[int] = (32, 64, 128, 256, 512),
    ) -> None:
        super().__init__(modalities, input_frames, output_frames)
        if self.modalities != ("vil",):
            raise StormFusionError(
                f"unet2d_stage4 reads VIL only; got modalities {list(self.modalities)}"
            )
        widths = tuple(int(w) for w in widths)
        if len(widths) < 2 or min(widths) < 1:
            raise StormFusionError(
                f"unet2d_stage4 argument widths={list(widths)} needs >= 2 positive ints"
            )
        self.widths = widths
        channels = (input_frames, *widths)
        self.down = nn.ModuleList(_Block(channels[i], channels[i + 1]) for i in range(len(widths)))
        levels = list(reversed(range(len(widths) - 1)))
        self.upsample = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in levels
        )
        self.up = nn.ModuleList(_Block(2 * widths[i], widths[i]) for i in levels)
        self.head = nn.Conv2d(widths[0], output_frames, 1)

    def forward(self, inputs: dict[str, Tensor], mask: Tensor) -> Tensor:
        inputs = self.prepare_inputs(inputs, mask)  # VIL grid, normalised
        h, w = inputs["vil"].shape[-2:]
        factor = 2 ** (len(self.widths) - 1)
        if h % factor or w % factor:
            raise StormFusionError(
                f"unet2d_stage4 needs H and W divisible by {factor}; got {h} x {w}"
            )
        x = denormalize("vil", inputs["vil"]).clamp(0.0, VIL_SCALE) / VIL_SCALE
        skips: list[Tensor] = []
        for i, block in enumerate(self.down):
            if i > 0:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        skips.pop()
        for upsample, block in zip(self.upsample, self.up, strict=True):
            x = block(torch.cat([upsample(x), skips.pop()], dim=1))
        return VIL_SCALE * self.head(x)
