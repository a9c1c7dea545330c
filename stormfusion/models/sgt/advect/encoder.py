"""MultiModalEncoder: one ResNet-style encoder per modality, fused at 1/4 resolution."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stormfusion.models.layers import ResidualBlock, conv_bn_relu


class ModalityEncoder(nn.Sequential):
    """ResNet-style encoder of one modality, T_in frames as channels.

    (B, T_in, H, W) -> (B, channels, H/4, W/4): a stride-2 3x3 stem to ``channels // 2``,
    a stride-2 basic block to ``channels`` and a basic block at 1/4 resolution. The blocks
    sit at 1/4 resolution, not 1/2, to keep the four encoders cheap at 384 x 384 (the IR and
    lightning inputs are upsampled from 192 and 48 pixels anyway).
    """

    def __init__(self, input_frames: int, channels: int) -> None:
        half = max(channels // 2, 1)
        super().__init__(
            conv_bn_relu(input_frames, half, stride=2),
            ResidualBlock(half, channels, stride=2),
            ResidualBlock(channels, channels),
        )


class MultiModalEncoder(nn.Module):
    """Encoders of every modality, fused by a 1x1 convolution into ``hidden_dim`` features.

    A missing modality (mask 0) contributes a learned "missing" embedding instead of its
    features: ``f_m * mask_m + e_m * (1 - mask_m)``, so zeros standing in for absent data are
    never mistaken for an observation.

    Args:
        modalities: names, in the order of the ``mask`` columns passed to :meth:`forward`.
        input_frames: T_in.
        channels: channels of each modality encoder at 1/4 resolution.
        hidden_dim: fused feature channels.

    Shapes: ``frames`` list of M tensors (B, T_in, H, W), ``mask`` (B, M) ->
    (B, hidden_dim, H/4, W/4).
    """

    def __init__(
        self, modalities: tuple[str, ...], input_frames: int, channels: int, hidden_dim: int
    ) -> None:
        super().__init__()
        self.modalities = modalities
        self.encoders = nn.ModuleDict(
            {m: ModalityEncoder(input_frames, channels) for m in modalities}
        )
        self.missing = nn.Parameter(torch.zeros(len(modalities), channels))
        self.fuse = nn.Sequential(
            nn.Conv2d(len(modalities) * channels, hidden_dim, 1, bias=False),
            nn.BatchNorm2d(hidden_dim),
            nn.ReLU(inplace=True),
        )

    def forward(self, frames: list[Tensor], mask: Tensor) -> Tensor:
        features = []
        for i, (name, x) in enumerate(zip(self.modalities, frames, strict=True)):
            f = self.encoders[name](x)
            present = mask[:, i].to(f.dtype)[:, None, None, None]
            features.append(f * present + self.missing[i][None, :, None, None] * (1 - present))
        return self.fuse(torch.cat(features, dim=1))
