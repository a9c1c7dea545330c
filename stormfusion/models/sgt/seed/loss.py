"""The seed's training loss, everything on the VIL / 255 scale.

    total = MSE + lambda_extreme * Extreme + lambda_physics * Physics

- Extreme: the MSE over the pixels whose target is strictly above ``extreme_threshold``
  (181) only, 0 when there are none; an extreme pixel thus weighs ``1 + lambda_extreme / p``
  relative to the others, p the batch's fraction of extreme pixels.
- Physics = ``conservation_weight`` * Conservation + ``gradient_weight`` * Gradient (0.1
  each, so 0.01 in the total): Conservation is the MSE between the per-frame mean intensity
  of prediction and target; Gradient is the MSE of the vertical plus the MSE of the
  horizontal forward differences of the prediction against the target's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from stormfusion.models.base import VIL_SCALE


@dataclass(frozen=True)
class SeedLossWeights:
    """Weights and switches of :func:`seed_loss` (the seed's defaults)."""

    lambda_extreme: float = 2.0
    lambda_physics: float = 0.1
    conservation_weight: float = 0.1
    gradient_weight: float = 0.1
    extreme_threshold: float = 181.0
    use_extreme: bool = True
    use_physics: bool = True


def conservation_term(pred: Tensor, target: Tensor) -> Tensor:
    """MSE between the per-frame means of ``pred`` and ``target`` (B, T, H, W)."""
    return torch.mean((pred.mean(dim=(-2, -1)) - target.mean(dim=(-2, -1))) ** 2)


def gradient_term(pred: Tensor, target: Tensor) -> Tensor:
    """MSE of the row-wise plus MSE of the column-wise forward differences, (B, T, H, W)."""
    dy = torch.mean(
        ((pred[..., 1:, :] - pred[..., :-1, :]) - (target[..., 1:, :] - target[..., :-1, :])) ** 2
    )
    dx = torch.mean(((pred[..., 1:] - pred[..., :-1]) - (target[..., 1:] - target[..., :-1])) ** 2)
    return dy + dx


def seed_loss(
    pred: Tensor, target: Tensor, weights: SeedLossWeights = SeedLossWeights()
) -> tuple[Tensor, dict[str, Tensor]]:
    """The seed's loss of ``pred`` (B, T, H, W) VIL / 255 against ``target`` (B, T, H, W) on
    the 0..255 scale. Returns the total and its terms (``mse``, ``extreme``,
    ``conservation``, ``gradient``; switched-off terms computed, not added)."""
    scaled = target / VIL_SCALE
    error2 = (pred - scaled) ** 2
    mse = error2.mean()
    extreme_pixels = target > weights.extreme_threshold
    count = extreme_pixels.sum()
    extreme = torch.where(
        count > 0, (error2 * extreme_pixels).sum() / count.clamp_min(1), error2.new_zeros(())
    )
    conservation = conservation_term(pred, scaled)
    gradient = gradient_term(pred, scaled)
    total = mse
    if weights.use_extreme:
        total = total + weights.lambda_extreme * extreme
    if weights.use_physics:
        physics = weights.conservation_weight * conservation + weights.gradient_weight * gradient
        total = total + weights.lambda_physics * physics
    terms = {"mse": mse, "extreme": extreme, "conservation": conservation, "gradient": gradient}
    return total, terms
