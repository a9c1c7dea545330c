"""GraphToGrid: Gaussian splatting of node features back onto the feature grid."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from stormfusion.errors import StormFusionError


class GraphToGrid(nn.Module):
    """Splat node features onto an (h, w) grid with an isotropic Gaussian kernel.

    ``grid[b, :, i, j] = sum_k valid[b, k] * exp(-|g_ij - p_bk|^2 / (2 sigma^2)) * f[b, k, :]``
    with ``g_ij = ((j + 0.5) / w, (i + 0.5) / h)`` the pixel centres in domain units and
    ``sigma`` in domain units (fractions of the side; 0.03 is about 12 km of SEVIR's 384 km).
    The kernel peaks at 1, so a single node's total over the grid is
    ``f * 2 pi (sigma w)(sigma h)`` when the kernel lies inside the grid. The summed kernel
    (the splat density) is returned too, so the network can tell "no cell" from "zero feature".

    Shapes: ``features`` (B, K, C), ``positions`` (B, K, 2) as (x, y), ``valid`` (B, K) ->
    (B, C, h, w) features and (B, 1, h, w) density.
    """

    def __init__(self, sigma: float = 0.03) -> None:
        super().__init__()
        if not sigma > 0:
            raise StormFusionError(f"sgt splat_sigma={sigma} must be > 0")
        self.sigma = float(sigma)

    def kernel(self, positions: Tensor, valid: Tensor, height: int, width: int) -> Tensor:
        """Kernel weights (B, K, h * w)."""
        ys = (torch.arange(height, device=positions.device, dtype=positions.dtype) + 0.5) / height
        xs = (torch.arange(width, device=positions.device, dtype=positions.dtype) + 0.5) / width
        dx2 = (xs[None, None, :] - positions[..., 0:1]) ** 2  # (B, K, w)
        dy2 = (ys[None, None, :] - positions[..., 1:2]) ** 2  # (B, K, h)
        scale = -1.0 / (2.0 * self.sigma**2)
        # exp of a sum = product of exps: build the separable kernel as an outer product.
        weights = torch.exp(dy2 * scale)[..., :, None] * torch.exp(dx2 * scale)[..., None, :]
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
        """The kernel's integral over an unbounded grid, in grid pixels: 2 pi sigma_x sigma_y."""
        return 2.0 * math.pi * (self.sigma * width) * (self.sigma * height)
