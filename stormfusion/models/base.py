"""The forecast contract every model follows, learned or not.

Inputs (what :class:`stormfusion.data.dataset.SevirWindowDataset` yields, batched):

- ``inputs``: ``dict[str, Tensor]``, one entry per modality the model uses
  (``vil``, ``ir069``, ``ir107``, ``lght``), each (B, T_in, n_m, n_m) in the archive's
  stored units at the modality's own resolution: in a domain whose VIL grid is S x S,
  VIL is S (uint8 digital VIL, missing 255 already read as 0), IR S/2 (int16, brightness
  temperature x 100 in degC) and lightning S/8 (flash counts per 5-minute frame). Any
  square grid and any real or integer dtype is accepted (the values are stored units).
- ``mask``: Tensor of shape (B, M), float32, 1.0 where the modality is present and 0.0 where
  it is missing, columns in the order of :data:`stormfusion.data.sevir.STUDY_MODALITIES`.
  Missing modalities arrive as zeros in ``inputs`` *and* a 0 in ``mask``.

Every model first calls :meth:`ForecastModel.prepare_inputs`, on the device the batch is
on: it checks the batch, brings each modality to the grid the model works on (by default
the VIL grid S, with the loader's regridding methods of :mod:`stormfusion.data.regrid`:
bilinear for IR, count-preserving for lightning) and normalises it with
:mod:`stormfusion.data.normalization`. The rest of a model sees float32, normalised frames
(B, T_in, H, W), all on one grid.

Targets (``target``, VIL on 0..255, (B, T_out, S, S)) leave the loader as stored uint8;
the trainer hands ``training_loss`` float32 targets on its device.

Output: VIL on the 0..255 digital scale, shape (B, T_out, H, W), float32, H = W = S.
:meth:`ForecastModel.forecast` clamps it to [0, 255]; scoring only ever calls ``forecast``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from stormfusion.data.normalization import denormalize, normalize
from stormfusion.data.regrid import regrid
from stormfusion.data.sevir import STUDY_MODALITIES, VIL_MAX
from stormfusion.errors import StormFusionError

#: Scale that maps VIL 0..255 to the loss's 0..1 range.
VIL_SCALE: float = float(VIL_MAX)


def as_modalities(modalities: Sequence[str] | str) -> tuple[str, ...]:
    """Normalise a modality argument (a name or a sequence of names; JSON gives lists)."""
    if isinstance(modalities, str):
        return (modalities,)
    return tuple(modalities)


class ForecastModel(nn.Module, abc.ABC):
    """Base class of every forecast model.

    Subclasses set :attr:`trainable`, list the modalities they read in
    :attr:`modalities`, and implement :meth:`forward`.
    """

    #: Whether the trainer should optimise this model (False for persistence, optical flow).
    trainable: ClassVar[bool] = True

    def __init__(
        self, modalities: Sequence[str] | str, input_frames: int, output_frames: int
    ) -> None:
        super().__init__()
        modalities = as_modalities(modalities)
        unknown = [m for m in modalities if m not in STUDY_MODALITIES]
        if unknown:
            raise StormFusionError(
                f"unknown modalities {unknown} in model argument 'modalities'; "
                f"valid: {list(STUDY_MODALITIES)}"
            )
        if not modalities:
            raise StormFusionError("model argument 'modalities' is empty")
        if len(set(modalities)) != len(modalities):
            raise StormFusionError(f"model argument 'modalities' repeats a name: {modalities}")
        if input_frames < 1 or output_frames < 1:
            raise StormFusionError(
                f"input_frames ({input_frames}) and output_frames ({output_frames}) must be >= 1"
            )
        self.modalities = modalities
        self.input_frames = int(input_frames)
        self.output_frames = int(output_frames)

    @abc.abstractmethod
    def forward(self, inputs: dict[str, Tensor], mask: Tensor) -> Tensor:
        """Forecast VIL, (B, T_out, H, W) on the 0..255 scale (not clamped)."""

    def training_loss(
        self, inputs: dict[str, Tensor], mask: Tensor, target: Tensor
    ) -> tuple[Tensor, dict[str, float]]:
        """Loss for one batch and its named terms (for logging).

        The default is the MSE on the 0..1 scale (VIL / 255). ``target`` is (B, T_out, H, W)
        on the 0..255 scale (float32 from the trainer; any real or integer dtype works).
        """
        pred = self(inputs, mask)
        target = target.float()
        mse = torch.mean((pred / VIL_SCALE - target / VIL_SCALE) ** 2)
        return mse, {"mse": float(mse.detach())}

    @torch.no_grad()
    def forecast(self, inputs: dict[str, Tensor], mask: Tensor) -> Tensor:
        """The contract's forecast: (B, T_out, H, W) VIL clamped to [0, 255]."""
        return self(inputs, mask).clamp(0.0, VIL_SCALE)

    # -- helpers shared by the models -------------------------------------------------

    def check_inputs(self, inputs: dict[str, Tensor], mask: Tensor) -> tuple[int, int, int]:
        """Check the batch against the contract; returns (B, S, S), S the VIL grid.

        Every modality in :attr:`modalities` must be present with shape (B, T_in, n, n)
        (square, any n; natively S, S/2 or S/8), and ``mask`` must be (B, 4). Without VIL
        among the model's modalities, S is the first modality's grid.
        """
        missing = [m for m in self.modalities if m not in inputs]
        if missing:
            raise StormFusionError(
                f"{type(self).__name__} needs input modalities {missing}; "
                f"the batch has {sorted(inputs)}"
            )
        grid_from = "vil" if "vil" in self.modalities else self.modalities[0]
        first = inputs[grid_from]
        if first.ndim != 4:
            raise StormFusionError(
                f"input {grid_from!r} must be (B, T_in, H, W); got {tuple(first.shape)}"
            )
        b, size = int(first.shape[0]), int(first.shape[-1])
        for name in self.modalities:
            shape = tuple(inputs[name].shape)
            if len(shape) != 4 or shape[:2] != (b, self.input_frames) or shape[2] != shape[3]:
                raise StormFusionError(
                    f"input {name!r} has shape {shape}; expected ({b}, {self.input_frames}, "
                    f"n, n) (input_frames={self.input_frames}; n = {size} for VIL, "
                    "natively half of it for IR and an eighth for lightning)"
                )
        if tuple(mask.shape) != (b, len(STUDY_MODALITIES)):
            raise StormFusionError(
                f"mask has shape {tuple(mask.shape)}; expected ({b}, {len(STUDY_MODALITIES)})"
            )
        return b, size, size

    def prepare_inputs(
        self, inputs: dict[str, Tensor], mask: Tensor, size: int | None = None
    ) -> dict[str, Tensor]:
        """The batch's inputs as the model computes on them, on their device.

        Checks the batch (:meth:`check_inputs`), then for each of :attr:`modalities`:
        float32 stored units, regridded to ``size`` x ``size`` (default: the VIL grid S)
        with the method :data:`stormfusion.data.regrid.REGRIDDERS` names for the modality
        (continuous fields bilinear when enlarging and area-averaged when shrinking;
        lightning count-preserving: every frame keeps its flash total), then normalised.
        Regridding runs in float32 even under autocast.

        Returns:
            ``{modality: (B, T_in, size, size) float32, normalised}``.
        """
        _, grid, _ = self.check_inputs(inputs, mask)
        size = grid if size is None else int(size)
        out: dict[str, Tensor] = {}
        for name in self.modalities:
            x = inputs[name].float()
            if x.shape[-1] != size:
                with torch.autocast(x.device.type, enabled=False):
                    x = regrid(name, x, size)
            out[name] = normalize(name, x)
        return out

    def modality_mask(self, mask: Tensor) -> Tensor:
        """Columns of ``mask`` (B, 4) for this model's modalities, in their order: (B, M)."""
        index = [STUDY_MODALITIES.index(m) for m in self.modalities]
        return mask[:, index]


def last_vil(inputs: dict[str, Tensor]) -> Tensor:
    """The latest input VIL frame back on the 0..255 scale (clamped to it), (B, 1, H, W)."""
    if "vil" not in inputs:
        raise StormFusionError(f"the batch has no 'vil' input (it has {sorted(inputs)})")
    return denormalize("vil", inputs["vil"][:, -1:]).clamp(0.0, VIL_SCALE)
