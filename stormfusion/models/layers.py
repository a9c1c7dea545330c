"""Small building blocks shared by the learned models."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stormfusion.data.sevir import STUDY_MODALITIES


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution, batch norm, ReLU: (B, C_in, H, W) -> (B, C_out, H/stride, W/stride)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """ResNet basic block (two 3x3 conv + BN, identity or 1x1 shortcut), optional stride.

    Shapes: (B, C_in, H, W) -> (B, C_out, H / stride, W / stride).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + self.shortcut(x))


def stack_modalities(
    inputs: dict[str, Tensor], mask: Tensor, modalities: tuple[str, ...]
) -> Tensor:
    """Input frames of ``modalities`` as channels, plus one mask channel per modality.

    ``inputs[m]`` (B, T_in, H, W) each, ``mask`` (B, 4) in STUDY_MODALITIES order.
    Returns (B, M * T_in + M, H, W) when M > 1 (missing modalities are zeros, and the
    constant mask channels tell the network which), and (B, T_in, H, W) for one modality.
    """
    frames = [inputs[m] for m in modalities]
    if len(modalities) == 1:
        return frames[0]
    b, _, h, w = frames[0].shape
    columns = [STUDY_MODALITIES.index(m) for m in modalities]
    planes = mask[:, columns].to(frames[0].dtype)[:, :, None, None].expand(b, -1, h, w)
    return torch.cat([*frames, planes], dim=1)


def init_small(module: nn.Conv2d | nn.Linear, std: float = 1e-3) -> None:
    """Near-zero initialisation of an output head, so a residual model starts as persistence.

    Not exactly zero: gradients must still reach the layers before the head at step 0.
    """
    nn.init.normal_(module.weight, std=std)
    if module.bias is not None:
        nn.init.zeros_(module.bias)
