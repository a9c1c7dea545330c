"""SpatioTemporalTransformer: a vision transformer over patches of the grid features.

The grid features carry the whole input sequence (the encoders read the T_in frames as
channels), so attention between patches mixes space and time at once. Shared by ``sgt``
(the seed's: 8 x 8 patches, the token map upsampled bilinearly back to the grid) and
``sgt_advect`` (ours: 4 x 4 patches, a linear un-embedding and pixel shuffle).
"""

from __future__ import annotations

from typing import Literal

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


Unembedding = Literal["linear", "upsample"]


class SpatioTemporalTransformer(nn.Module):
    """Pre-norm transformer encoder over ``patch_size`` x ``patch_size`` patches.

    Patches are embedded by a strided convolution, get the 2D sinusoidal encoding of their
    place in the patch grid, go through ``layers`` encoder layers (multi-head attention and
    a GELU MLP of ``mlp_ratio`` x ``dim``, dropout ``dropout`` on the attention weights,
    after the attention and in the MLP) and a final LayerNorm, and are brought back to the
    grid and added to the input (residual): ``unembed="linear"`` projects each token to its
    patch's pixels (linear + pixel shuffle); ``"upsample"`` upsamples the token map
    bilinearly (no parameters; the seed's).

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
        unembed: Unembedding = "linear",
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
        self.unembed: nn.Linear | None = None
        if unembed == "linear":
            self.unembed = nn.Linear(dim, dim * patch_size**2)

    def tokens(self, x: Tensor) -> tuple[Tensor, int, int]:
        """Embedded, position-encoded tokens (B, h/p * w/p, dim), row-major, and h/p, w/p."""
        c, h, w = x.shape[1:]
        p = self.patch_size
        if h % p or w % p:
            raise StormFusionError(
                f"sgt feature grid {h} x {w} is not a multiple of patch_size={p}"
            )
        tokens = self.embed(x)  # (B, C, h/p, w/p)
        hp, wp = tokens.shape[-2:]
        tokens = tokens.flatten(2).transpose(1, 2)
        return tokens + sincos_2d(hp, wp, c, x.device, x.dtype)[None], hp, wp

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        tokens, hp, wp = self.tokens(x)
        tokens = self.norm(self.encoder(tokens))
        if self.unembed is None:
            grid = tokens.transpose(1, 2).reshape(b, c, hp, wp)
            return x + F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)
        p = self.patch_size
        patches = self.unembed(tokens).transpose(1, 2).reshape(b, c * p * p, hp, wp)
        return x + F.pixel_shuffle(patches, p)

    @torch.no_grad()
    def last_attention(self, x: Tensor) -> tuple[Tensor, int, int]:
        """The last layer's self-attention over the tokens of ``x`` (B, dim, h, w).

        Returns the weights (B, N, N), mean over heads, row = query token, each row summing
        to 1, tokens row-major on the (h/p, w/p) patch grid, and h/p, w/p.
        """
        tokens, hp, wp = self.tokens(x)
        layers = list(self.encoder.layers)
        for layer in layers[:-1]:
            tokens = layer(tokens)
        last = layers[-1]
        normed = last.norm1(tokens) if last.norm_first else tokens
        _, weights = last.self_attn(
            normed, normed, normed, need_weights=True, average_attn_weights=True
        )
        return weights, hp, wp
