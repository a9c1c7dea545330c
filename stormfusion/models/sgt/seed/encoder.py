"""The seed's multi-modal encoder: one ResNet-style encoder per modality, fused by a 1x1 conv."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stormfusion.models.layers import ResidualBlock


class SeedModalityEncoder(nn.Sequential):
    """ResNet-style encoder of one modality, T_in frames as channels.

    (B, T_in, H, W) -> (B, out_channels, H/4, W/4): a 7x7 stride-2 stem (with bias) to
    ``width`` channels, BatchNorm, ReLU (1/2 resolution); two basic blocks ``width ->
    width``; a stride-2 basic block to ``2 width`` (1x1 + BN shortcut) and a basic block
    ``2 width -> 2 width`` (1/4 resolution); a 1x1 conv (with bias) to ``out_channels``.
    Seed: width 64, out 128 (727,872 parameters at T_in = 12).
    """

    def __init__(self, input_frames: int, width: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(input_frames, width, 7, stride=2, padding=3),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            ResidualBlock(width, width),
            ResidualBlock(width, width),
            ResidualBlock(width, 2 * width, stride=2),
            ResidualBlock(2 * width, 2 * width),
            nn.Conv2d(2 * width, out_channels, 1),
        )


class SeedEncoder(nn.Module):
    """Encoders of every modality, concatenated and fused by a 1x1 conv (with bias; no norm,
    no activation) into ``hidden_dim`` features.

    A missing modality (mask 0) contributes zero features: unlike the seed, which has no
    mask, zeros standing in for absent data are not passed through the encoder as if they
    were an observation (no parameters added, so the seed's count holds).

    Shapes: ``frames`` list of M tensors (B, T_in, H, W), ``mask`` (B, M) ->
    (B, hidden_dim, H/4, W/4).
    """

    def __init__(
        self, modalities: tuple[str, ...], input_frames: int, width: int, hidden_dim: int
    ) -> None:
        super().__init__()
        self.modalities = modalities
        self.encoders = nn.ModuleDict(
            {m: SeedModalityEncoder(input_frames, width, hidden_dim) for m in modalities}
        )
        self.fuse = nn.Conv2d(len(modalities) * hidden_dim, hidden_dim, 1)

    def forward(self, frames: list[Tensor], mask: Tensor) -> Tensor:
        features = []
        for i, (name, x) in enumerate(zip(self.modalities, frames, strict=True)):
            f = self.encoders[name](x)
            features.append(f * mask[:, i].to(f.dtype)[:, None, None, None])
        return self.fuse(torch.cat(features, dim=1))
