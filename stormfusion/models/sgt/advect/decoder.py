"""PhysicsDecoder: back to full resolution and T_out frames, by learned advection.

The decoder predicts, from the grid features, a velocity field (at 1/4 resolution) and a
source term per lead (at 1/2 resolution, upsampled bilinearly: the full-resolution detail
comes from advecting the observed frame), and steps the last observed VIL frame forward
one frame at a time:

    I_t = exp(g_t) * warp(I_{t-1}, V) + S_t,     I_0 = last observed frame (VIL / 255)

``warp`` is a backward semi-Lagrangian step (bilinear ``grid_sample``; inflow from outside the
domain is 0), ``V`` is a steady velocity field in domain units per frame (the velocity head,
times a learnable global scale), ``g_t`` is a learnable growth/decay rate per lead and
``S_t`` the source term (growth and decay that motion does not explain). These are the
learnable advection parameters; at initialisation V, g and S are near zero, so the model
starts as persistence.

Physics terms (for the loss), on the frame sequence I_0..I_T in pixel units:

- conservation (advection) residual: mean of ``(dI/dt + u dI/dx + v dI/dy)^2``, finite
  differences: forward in time, central in space at the mid-step ``(I_t + I_{t-1}) / 2``,
  with (u, v) in pixels per frame;
- gradient smoothness: mean squared spatial gradient of (u, v) (pixels per frame per pixel).

Without physics (the ablation) there is no velocity: ``I_t = I_0 + S_t``, a residual over
persistence decoded by the same upsampling path, and both physics terms are zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stormfusion.models.layers import conv_bn_relu, init_small


@dataclass
class DecoderOutput:
    """``frames`` (B, T_out, H, W) on the 0..1 scale (VIL / 255, unclamped);
    ``velocity`` (B, 2, H, W) in pixels per frame as (u along x/columns, v along y/rows),
    or None without physics."""

    frames: Tensor
    velocity: Tensor | None


def _gradients(x: Tensor) -> tuple[Tensor, Tensor]:
    """Central differences along x (columns) and y (rows) in pixels, one-sided at edges."""
    dx = torch.gradient(x, dim=-1)[0]
    dy = torch.gradient(x, dim=-2)[0]
    return dx, dy


class PhysicsDecoder(nn.Module):
    """(B, hidden_dim, H/4, W/4) features + last frame (B, 1, H, W) -> :class:`DecoderOutput`.

    Args:
        hidden_dim: feature channels in.
        output_frames: T_out.
        use_physics: advect with a learned velocity (True) or add residuals to persistence.
    """

    def __init__(self, hidden_dim: int, output_frames: int, use_physics: bool = True) -> None:
        super().__init__()
        mid, low = max(hidden_dim // 2, 1), max(hidden_dim // 4, 1)
        self.output_frames = output_frames
        self.use_physics = use_physics
        self.refine = conv_bn_relu(hidden_dim, mid)  # at 1/4 resolution
        self.up = conv_bn_relu(mid, low)  # at 1/2 resolution
        self.source = nn.Conv2d(low, output_frames, 3, padding=1)
        init_small(self.source)
        self.velocity: nn.Conv2d | None = None
        if use_physics:
            self.velocity = nn.Conv2d(mid, 2, 3, padding=1)
            init_small(self.velocity)
            #: log of the velocity scale (domain units per frame per unit of head output);
            #: 0.1 lets the near-zero head reach realistic speeds within a few dozen steps.
            self.log_speed = nn.Parameter(torch.tensor(math.log(0.1)))
            #: growth/decay rate per lead.
            self.growth = nn.Parameter(torch.zeros(output_frames))

    def forward(self, features: Tensor, last: Tensor) -> DecoderOutput:
        h, w = last.shape[-2:]
        refined = self.refine(features)
        x = F.interpolate(refined, scale_factor=2, mode="bilinear", align_corners=False)
        sources = self.source(self.up(x))  # (B, T_out, H/2, W/2)
        sources = F.interpolate(sources, size=(h, w), mode="bilinear", align_corners=False)
        if self.velocity is None:
            return DecoderOutput(last + sources, None)
        head = self.velocity(refined)  # (B, 2, h/4, w/4)
        velocity_domain = F.interpolate(head, size=(h, w), mode="bilinear", align_corners=False)
        velocity_domain = velocity_domain * torch.exp(self.log_speed)
        # grid_sample coordinates span 2 over the domain; a backward step samples at p - V.
        ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=last.device, dtype=last.dtype)
        xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=last.device, dtype=last.dtype)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        base = torch.stack([gx, gy], dim=-1)[None]  # (1, H, W, 2) as (x, y)
        grid = base - 2.0 * velocity_domain.permute(0, 2, 3, 1)
        frames = []
        current = last
        for t in range(self.output_frames):
            moved = F.grid_sample(
                current, grid, mode="bilinear", padding_mode="zeros", align_corners=False
            )
            current = torch.exp(self.growth[t]) * moved + sources[:, t : t + 1]
            frames.append(current)
        scale = torch.tensor([w, h], device=last.device, dtype=last.dtype)[None, :, None, None]
        return DecoderOutput(torch.cat(frames, dim=1), velocity_domain * scale)

    @staticmethod
    def physics_terms(output: DecoderOutput, last: Tensor) -> tuple[Tensor, Tensor]:
        """(advection residual, velocity smoothness), each a scalar; zeros without velocity."""
        if output.velocity is None:
            zero = output.frames.new_zeros(())
            return zero, zero
        sequence = torch.cat([last, output.frames], dim=1)  # (B, T_out + 1, H, W)
        dt = sequence[:, 1:] - sequence[:, :-1]
        dx, dy = _gradients(0.5 * (sequence[:, 1:] + sequence[:, :-1]))
        u, v = output.velocity[:, 0:1], output.velocity[:, 1:2]
        advection = torch.mean((dt + u * dx + v * dy) ** 2)
        ux, uy = _gradients(u)
        vx, vy = _gradients(v)
        smoothness = torch.mean(ux**2 + uy**2 + vx**2 + vy**2)
        return advection, smoothness
