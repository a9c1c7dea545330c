"""GraphToGrid: Gaussian splatting of node features back onto the feature grid.

Shared by ``sgt`` (the seed's: learnable width in grid pixels, each kernel normalised to sum
1) and ``sgt_advect`` (ours: fixed width in domain units, kernels peaking at 1 and their sum
returned as a density channel).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from stormfusion.errors import StormFusionError

SigmaUnits = Literal["domain", "pixels"]


class GraphToGrid(nn.Module):
    """Splat node features onto an (h, w) grid with an isotropic Gaussian kernel.

    ``grid[b, :, i, j] = sum_k valid[b, k] * K_bk(i, j) * f[b, k, :]`` with
    ``K_bk(i, j) = exp(-((j - x_k)^2 / sx^2 + (i - y_k)^2 / sy^2) / 2)`` in grid pixels, the
    node at pixel coordinates ``(x_k, y_k) = (x w - 1/2, y h - 1/2)`` of its position
    ``(x, y)`` in [0, 1]. The width is ``sigma`` grid pixels (``units="pixels"``: sx = sy =
    sigma) or ``sigma`` fractions of the side (``units="domain"``: sx = sigma w, sy = sigma h;
    0.03 is about 12 km of SEVIR's 384 km).

    Args:
        sigma: kernel width (> 0), initial value when learnable.
        units: ``"domain"`` or ``"pixels"``.
        learnable: learn the width (as log sigma, one parameter).
        normalize: divide each node's kernel by its sum over the grid (total 1); otherwise
            the kernel peaks at 1.

    Shapes: ``features`` (B, K, C), ``positions`` (B, K, 2) as (x, y), ``valid`` (B, K) ->
    (B, C, h, w) features and (B, 1, h, w) density (the summed kernels).
    """

    def __init__(
        self,
        sigma: float = 0.03,
        units: SigmaUnits = "domain",
        learnable: bool = False,
        normalize: bool = False,
    ) -> None:
        super().__init__()
        if not sigma > 0:
            raise StormFusionError(f"sgt splat_sigma={sigma} must be > 0")
        self.units = units
        self.normalize = normalize
        self.log_sigma: nn.Parameter | None = None
        self.sigma = float(sigma)
        if learnable:
            self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma)))

    def widths(self, height: int, width: int) -> tuple[Tensor | float, Tensor | float]:
        """Kernel widths (sx, sy) in grid pixels."""
        sigma: Tensor | float = self.sigma if self.log_sigma is None else self.log_sigma.exp()
        if self.units == "domain":
            return sigma * width, sigma * height
        return sigma, sigma

    def kernel(self, positions: Tensor, valid: Tensor, height: int, width: int) -> Tensor:
        """Kernel weights (B, K, h * w)."""
        ys = torch.arange(height, device=positions.device, dtype=positions.dtype)
        xs = torch.arange(width, device=positions.device, dtype=positions.dtype)
        sx, sy = self.widths(height, width)
        dx2 = (xs[None, None, :] - (positions[..., 0:1] * width - 0.5)) ** 2  # (B, K, w)
        dy2 = (ys[None, None, :] - (positions[..., 1:2] * height - 0.5)) ** 2  # (B, K, h)
        # exp of a sum = product of exps: build the separable kernel as an outer product.
        kx = torch.exp(-dx2 / (2 * sx**2))
        ky = torch.exp(-dy2 / (2 * sy**2))
        if self.normalize:
            kx = kx / kx.sum(dim=-1, keepdim=True)
            ky = ky / ky.sum(dim=-1, keepdim=True)
        weights = ky[..., :, None] * kx[..., None, :]
        return weights.reshape(*positions.shape[:2], height * width) * valid[..., None].to(
            positions.dtype
        )

    def forward(
        self, features: Tensor, positions: Tensor, valid: Tensor, height: int, width: int
    ) -> tuple[Tensor, Tensor]:
        weights = self.kernel(positions, valid, height, width)
        b, c = features.shape[0], features.shape[2]
        grid = torch.einsum("bkp,bkc->bcp", weights, features).reshape(b, c, height, width)
        density = weights.sum(dim=1).reshape(b, 1, height, width)
        return grid, density

    def total(self, height: int, width: int) -> float:
        """An unnormalised kernel's integral over an unbounded grid, in grid pixels."""
        sx, sy = self.widths(height, width)
        return float(2.0 * math.pi * sx * sy)
