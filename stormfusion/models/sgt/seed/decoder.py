"""The seed's decoder: a pooled GRU over the leads, a shared transposed-conv upsampler and a
global "physics" translation and decay of each frame."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def translate(frames: Tensor, shift_x: Tensor, shift_y: Tensor) -> Tensor:
    """Move each frame of ``frames`` (B, T, H, W) by ``(shift_x[t], shift_y[t])`` pixels
    (along columns, rows), bilinear resampling, zero outside the domain (shifts (T,))."""
    b, t, h, w = frames.shape
    theta = frames.new_zeros(t, 2, 3)
    theta[:, 0, 0] = 1.0
    theta[:, 1, 1] = 1.0
    # affine_grid samples output pixel p at p + offset: moving content by +s samples at p - s.
    theta[:, 0, 2] = -2.0 * shift_x / w
    theta[:, 1, 2] = -2.0 * shift_y / h
    grid = F.affine_grid(theta, [t, 1, h, w], align_corners=False)  # (T, H, W, 2)
    flat = frames.transpose(0, 1).reshape(t, b, h, w)  # each lead as one sample, B channels
    moved = F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return moved.reshape(t, b, h, w).transpose(0, 1)


class SeedDecoder(nn.Module):
    """(B, C, h, w) grid features -> (B, T_out, 4h, 4w) VIL / 255 in [0, 1] (before physics).

    The features are mean-pooled to one C-vector per sample, repeated over the T_out leads
    through a 2-layer GRU(C, C); each lead's GRU output is added to the grid features
    everywhere, and a shared upsampler (ConvTranspose 4x4 stride 2 to 64, BN, ReLU;
    ConvTranspose 4x4 stride 2 to 32, BN, ReLU; 3x3 conv to 1; Sigmoid) gives the frame.

    With ``physics``, three global learnable scalars: (u, v) (initially 0) translate lead t
    (0-based) uniformly by ``(t + 1)(u, v)`` pixels (bilinear, zero padding) and d
    (initially 0.01) multiplies it by ``exp(-d (t + 1))``.
    """

    def __init__(self, hidden_dim: int, output_frames: int, physics: bool = True) -> None:
        super().__init__()
        self.output_frames = output_frames
        self.gru = nn.GRU(hidden_dim, hidden_dim, num_layers=2, batch_first=True)
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(hidden_dim, 64, 4, stride=2, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 1, 3, padding=1),
            nn.Sigmoid(),
        )

        self.motion: nn.Parameter | None = None
        self.decay: nn.Parameter | None = None
        if physics:
            #: (u, v): pixels per lead along columns and rows.
            self.motion = nn.Parameter(torch.zeros(2))
            self.decay = nn.Parameter(torch.tensor(0.01))

    def forward(self, features: Tensor) -> Tensor:
        b, c, h, w = features.shape
        t = self.output_frames
        pooled = features.mean(dim=(2, 3))
        steps, _ = self.gru(pooled[:, None, :].expand(b, t, c).contiguous())  # (B, T, C)
        per_lead = features[:, None] + steps[:, :, :, None, None]  # (B, T, C, h, w)
        frames = self.upsample(per_lead.reshape(b * t, c, h, w))
        frames = frames.reshape(b, t, *frames.shape[-2:])
        return self.physics(frames)

    def physics(self, frames: Tensor) -> Tensor:
        """Translate and decay (B, T, H, W) frames with the global scalars (identity without)."""
        if self.motion is None or self.decay is None:
            return frames
        lead = torch.arange(1, frames.shape[1] + 1, device=frames.device, dtype=frames.dtype)
        moved = translate(frames, lead * self.motion[0], lead * self.motion[1])
        return moved * torch.exp(-self.decay * lead)[None, :, None, None]
