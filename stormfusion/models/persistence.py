"""Persistence: the latest observed VIL frame, repeated for every lead time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from torch import Tensor

from stormfusion.models import MODELS
from stormfusion.models.base import ForecastModel, last_vil


@MODELS.register("persistence")
class Persistence(ForecastModel):
    """Forecast = the last input VIL frame (0..255), for each of the T_out leads.

    Inputs: ``inputs["vil"]`` (B, T_in, H, W), stored units. Output (B, T_out, H, W).
    """

    trainable: ClassVar[bool] = False

    def __init__(
        self,
        input_frames: int = 12,
        output_frames: int = 6,
        modalities: Sequence[str] = ("vil",),
    ) -> None:
        super().__init__(modalities, input_frames, output_frames)

    def forward(self, inputs: dict[str, Tensor], mask: Tensor) -> Tensor:
        inputs = self.prepare_inputs(inputs, mask)
        return last_vil(inputs).expand(-1, self.output_frames, -1, -1).contiguous()
