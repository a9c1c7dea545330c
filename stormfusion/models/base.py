"""The forecast contract every model follows, learned or not.

Inputs (what :class:`stormfusion.data.dataset.SevirWindowDataset` yields, batched):

- ``inputs``: ``dict[str, Tensor]``, one entry per modality the model uses
  (``vil``, ``ir069``, ``ir107``, ``lght``), each of shape (B, T_in, H, W), float32,
  normalised with :mod:`stormfusion.data.normalization` and on the model grid (H = W).
- ``mask``: Tensor of shape (B, M), float32, 1.0 where the modality is present and 0.0 where
  it is missing, columns in the order of :data:`stormfusion.data.sevir.STUDY_MODALITIES`.
  Missing modalities arrive as zeros in ``inputs`` *and* a 0 in ``mask``.

Output: VIL on the 0..255 digital scale, shape (B, T_out, H, W), float32.
:meth:`ForecastModel.forecast` clamps it to [0, 255]; scoring only ever calls ``forecast``.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from torch import Tensor, nn

from stormfusion.data.sevir import STUDY_MODALITIES

#: Scale that maps VIL 0..255 to the loss's 0..1 range.
VIL_SCALE: float = 255.0


class ForecastModel(nn.Module, abc.ABC):
    """Base class of every forecast model.

    Subclasses set :attr:`trainable`, list the modalities they read in
    :attr:`modalities`, and implement :meth:`forward`.
    """

    #: Whether the trainer should optimise this model (False for persistence, optical flow).
    trainable: ClassVar[bool] = True

    def __init__(self, modalities: tuple[str, ...], input_frames: int, output_frames: int) -> None:
        super().__init__()
        unknown = [m for m in modalities if m not in STUDY_MODALITIES]
        if unknown:
            raise ValueError(f"unknown modalities {unknown}; valid: {list(STUDY_MODALITIES)}")
        if input_frames < 1 or output_frames < 1:
            raise ValueError("input_frames and output_frames must be >= 1")
        self.modalities = tuple(modalities)
        self.input_frames = input_frames
        self.output_frames = output_frames

    @abc.abstractmethod
    def forward(self, inputs: dict[str, Tensor], mask: Tensor) -> Tensor:
        """Forecast VIL, (B, T_out, H, W) on the 0..255 scale (not clamped)."""

    def training_loss(
        self, inputs: dict[str, Tensor], mask: Tensor, target: Tensor
    ) -> tuple[Tensor, dict[str, float]]:
        """Loss for one batch and its named terms (for logging).

        The default is the MSE on the 0..1 scale (VIL / 255). ``target`` is (B, T_out, H, W)
        on the 0..255 scale.
        """
        pred = self(inputs, mask)
        mse = torch.mean((pred / VIL_SCALE - target / VIL_SCALE) ** 2)
        return mse, {"mse": float(mse.detach())}

    @torch.no_grad()
    def forecast(self, inputs: dict[str, Tensor], mask: Tensor) -> Tensor:
        """The contract's forecast: (B, T_out, H, W) VIL clamped to [0, 255]."""
        return self(inputs, mask).clamp(0.0, VIL_SCALE)
