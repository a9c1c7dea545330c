"""SpatioTemporalTransformer: a vision transformer over patches of the grid features.

The grid features carry the whole input sequence (the encoders read the T_in frames as
channels), so attention between patches mixes space and time at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stormfusion.errors import StormFusionError


def sincos_2d(
    height: int, width: int, dim: int, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """2D sinusoidal positional encoding (height * width, dim), computed for any grid.

    Half the channels encode the row, half the column, each as sin/cos pairs of
    geometrically spaced frequencies (as the 1D encoding of Vaswani et al.). ``dim`` % 4 == 0.
    """
    quarter = dim // 4
    omega = 1.0 / (10000.0 ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter))
    ys = torch.arange(height, device=device, dtype=torch.float32)
    xs = torch.arange(width, device=device, dtype=torch.float32)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    ay = gy.reshape(-1, 1) * omega[None]
    ax = gx.reshape(-1, 1) * omega[None]
    return torch.cat([ay.sin(), ay.cos(), ax.sin(), ax.cos()], dim=1).to(dtype)


class SpatioTemporalTransformer(nn.Module):
    """Pre-norm transformer encoder over ``patch_size`` x ``patch_size`` patches.

    Patches are embedded by a strided convolution, get the 2D sinusoidal encoding of their
    place in the patch grid, go through ``layers`` encoder layers, and are projected back to
    pixels (linear + pixel shuffle) and added to the input (residual).

    Shapes: (B, dim, h, w) -> (B, dim, h, w), h and w multiples of ``patch_size``.
    """

    def __init__(
        self,
        dim: int,
        layers: int = 4,
        heads: int = 8,
        patch_size: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % heads or dim % 4:
            raise StormFusionError(f"sgt hidden_dim={dim} must be divisible by heads={heads} and 4")
        if layers < 1 or patch_size < 1:
            raise StormFusionError(
                f"sgt transformer_layers={layers} and patch_size={patch_size} must be >= 1"
            )
        self.patch_size = patch_size
        self.embed = nn.Conv2d(dim, dim, patch_size, stride=patch_size)
        layer = nn.TransformerEncoderLayer(
            dim,
            heads,
            int(dim * mlp_ratio),
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.unembed = nn.Linear(dim, dim * patch_size**2)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        p = self.patch_size
        if h % p or w % p:
            raise StormFusionError(
                f"sgt feature grid {h} x {w} is not a multiple of patch_size={p}"
            )
        tokens = self.embed(x)  # (B, C, h/p, w/p)
        hp, wp = tokens.shape[-2:]
        tokens = tokens.flatten(2).transpose(1, 2)
        tokens = tokens + sincos_2d(hp, wp, c, x.device, x.dtype)[None]
        tokens = self.norm(self.encoder(tokens))
        patches = self.unembed(tokens).transpose(1, 2).reshape(b, c * p * p, hp, wp)
        return x + F.pixel_shuffle(patches, p)
