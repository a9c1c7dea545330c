"""ConvLSTM encoder-forecaster (Shi et al., "Convolutional LSTM Network", NeurIPS 2015).

As in the paper, frames are first reshaped into non-overlapping ``patch_size`` x
``patch_size`` patches (space-to-depth), an encoding stack of ConvLSTM layers reads the
T_in input frames, and a forecasting stack whose states are copied from the encoder
unrolls T_out steps without input (top layer first, each lower layer reading the layer
above). The hidden states of all forecasting layers are concatenated and a 1x1 convolution
maps them to the prediction, turned back into a full-resolution frame (depth-to-space).
Each lead predicts a change of VIL on the 0..1 scale added to the last observed frame
(a residual over persistence, as for the UNet).

Default modalities: VIL only (the SEVIR benchmark setup); with several, each frame stacks
the modalities and one constant mask plane per modality.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stormfusion.errors import StormFusionError
from stormfusion.models import MODELS
from stormfusion.models.base import VIL_SCALE, ForecastModel, last_vil
from stormfusion.models.layers import init_small, stack_modalities


class ConvLSTMCell(nn.Module):
    """One ConvLSTM cell with full convolutional gates (no peepholes).

    ``x`` (B, C_in, h, w) or None (a forecaster layer without input), state (h, c), each
    (B, C_hidden, h, w). Returns the new (h, c).
    """

    def __init__(self, input_channels: int, hidden_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        padding = kernel_size // 2
        self.input_conv: nn.Conv2d | None = None
        if input_channels > 0:
            self.input_conv = nn.Conv2d(
                input_channels, 4 * hidden_channels, kernel_size, padding=padding
            )
        self.hidden_conv = nn.Conv2d(
            hidden_channels,
            4 * hidden_channels,
            kernel_size,
            padding=padding,
            bias=self.input_conv is None,
        )

    def forward(self, x: Tensor | None, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h, c = state
        gates = self.hidden_conv(h)
        if x is not None and self.input_conv is not None:
            gates = gates + self.input_conv(x)
        i, f, g, o = torch.chunk(gates, 4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


@MODELS.register("convlstm")
class ConvLSTM(ForecastModel):
    """Encoder-forecaster ConvLSTM, (B, T_in, H, W) per modality -> (B, T_out, H, W) VIL.

    Args:
        input_frames, output_frames: T_in and T_out.
        modalities: modalities read (default VIL only).
        hidden_channels: hidden channels of each ConvLSTM layer, bottom first (the
            number of layers is its length; Shi et al. used (64, 64) for radar).
        kernel_size: gate convolution kernel (odd).
        patch_size: side of the space-to-depth patches; H and W must be multiples of it.
    """

    def __init__(
        self,
        input_frames: int = 12,
        output_frames: int = 6,
        modalities: Sequence[str] = ("vil",),
        hidden_channels: Sequence[int] = (64, 64),
        kernel_size: int = 3,
        patch_size: int = 4,
    ) -> None:
        super().__init__(modalities, input_frames, output_frames)
        if "vil" not in self.modalities:
            raise StormFusionError("convlstm needs 'vil' in its modalities")
        hidden = tuple(int(c) for c in hidden_channels)
        if not hidden or min(hidden) < 1:
            raise StormFusionError(f"convlstm argument hidden_channels={list(hidden)} is invalid")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise StormFusionError(f"convlstm argument kernel_size={kernel_size} must be odd")
        if patch_size < 1:
            raise StormFusionError(f"convlstm argument patch_size={patch_size} must be >= 1")
        self.hidden_channels = hidden
        self.patch_size = patch_size
        m = len(self.modalities)
        per_frame = (m + (m if m > 1 else 0)) * patch_size**2
        self.encoder = nn.ModuleList(
            ConvLSTMCell(per_frame if i == 0 else hidden[i - 1], c, kernel_size)
            for i, c in enumerate(hidden)
        )
        # Forecaster layer i reads the layer above (i + 1); the top layer has no input.
        self.forecaster = nn.ModuleList(
            ConvLSTMCell(hidden[i + 1] if i + 1 < len(hidden) else 0, c, kernel_size)
            for i, c in enumerate(hidden)
        )
        self.head = nn.Conv2d(sum(hidden), patch_size**2, 1)
        init_small(self.head)

    def _frames(self, inputs: dict[str, Tensor], mask: Tensor) -> Tensor:
        """(B, T_in, C_frame * p^2, H/p, W/p): per time step, modalities (+ mask) as patches."""
        m = len(self.modalities)
        stacked = stack_modalities(inputs, mask, self.modalities)  # (B, T*m [+ m], H, W)
        b, _, h, w = stacked.shape
        t = self.input_frames
        frames = stacked[:, : t * m].reshape(b, m, t, h, w).transpose(1, 2)
        if m > 1:
            planes = stacked[:, t * m :].unsqueeze(1).expand(b, t, m, h, w)
            frames = torch.cat([frames, planes], dim=2)
        frames = frames.reshape(b * t, -1, h, w)
        patches = F.pixel_unshuffle(frames, self.patch_size)
        return patches.reshape(b, t, *patches.shape[1:])

    def forward(self, inputs: dict[str, Tensor], mask: Tensor) -> Tensor:
        inputs = self.prepare_inputs(inputs, mask)  # VIL grid, normalised
        b, h, w = self.check_inputs(inputs, mask)
        if h % self.patch_size or w % self.patch_size:
            raise StormFusionError(
                f"convlstm needs H and W divisible by patch_size={self.patch_size}; got {h} x {w}"
            )
        frames = self._frames(inputs, mask)
        gh, gw = frames.shape[-2:]
        states = [
            (frames.new_zeros(b, c, gh, gw), frames.new_zeros(b, c, gh, gw))
            for c in self.hidden_channels
        ]
        for t in range(self.input_frames):
            x: Tensor | None = frames[:, t]
            for i, cell in enumerate(self.encoder):
                states[i] = cell(x, states[i])
                x = states[i][0]
        outputs = []
        for _ in range(self.output_frames):
            above: Tensor | None = None
            for i in reversed(range(len(self.forecaster))):
                states[i] = self.forecaster[i](above, states[i])
                above = states[i][0]
            hidden = torch.cat([s[0] for s in states], dim=1)
            outputs.append(F.pixel_shuffle(self.head(hidden), self.patch_size))
        delta = torch.cat(outputs, dim=1)  # (B, T_out, H, W)
        return last_vil(inputs) + VIL_SCALE * delta
