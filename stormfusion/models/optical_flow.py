"""Lucas-Kanade optical flow + semi-Lagrangian extrapolation, the field's reference nowcast.

Motion is estimated from the last ``motion_frames`` input VIL frames (raw 0..255) with
pysteps' dense Lucas-Kanade (``pysteps.motion.get_method("LK")``: Shi-Tomasi features,
pyramidal OpenCV tracking, outlier removal, inverse-distance interpolation to a dense
field) and the latest frame is advected with pysteps' semi-Lagrangian extrapolation
(``pysteps.nowcasts.get_method("extrapolation")``). The velocity is in pixels per frame,
so one extrapolation step is one frame (5 minutes). Pixels advected in from outside the
domain are 0 (no echo). No weights; samples of a batch can be spread over processes.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from stormfusion.data.normalization import denormalize
from stormfusion.errors import StormFusionError
from stormfusion.models import MODELS
from stormfusion.models.base import VIL_SCALE, ForecastModel

log = logging.getLogger(__name__)

#: One pool per worker count, shared by every model instance of the process.
_POOLS: dict[int, ProcessPoolExecutor] = {}


def _pool(workers: int) -> ProcessPoolExecutor:
    if workers not in _POOLS:
        # forkserver: workers start from a clean process, never a fork of a parent whose
        # torch/OpenCV thread pools are already running.
        context = multiprocessing.get_context("forkserver")
        # The server imports this module (torch, pysteps) once; workers fork from it.
        context.set_forkserver_preload([__name__])
        _POOLS[workers] = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    return _POOLS[workers]


@atexit.register
def _shutdown_pools() -> None:
    for pool in _POOLS.values():
        pool.shutdown(wait=False, cancel_futures=True)
    _POOLS.clear()


def lk_extrapolate(frames: np.ndarray, lead_frames: int) -> np.ndarray:
    """Nowcast one sample.

    Args:
        frames: (T, H, W) raw VIL 0..255, oldest first (T >= 2).
        lead_frames: number of frames to forecast.

    Returns:
        (lead_frames, H, W) float32 VIL, 0 where the flow brought in no data.
    """
    from pysteps import motion, nowcasts  # imported here: heavy, and needed in workers

    frames = np.asarray(frames, dtype=np.float64)
    if not np.any(frames[-1] > 0):
        return np.zeros((lead_frames, *frames.shape[1:]), dtype=np.float32)
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        # pysteps' outlier test takes the covariance of tiny neighbourhoods when few features
        # are tracked (small or nearly empty fields); it handles the NaNs itself.
        warnings.filterwarnings("ignore", "Degrees of freedom", RuntimeWarning)
        velocity = motion.get_method("LK")(frames, verbose=False)
    extrapolate = nowcasts.get_method("extrapolation")
    forecast = extrapolate(frames[-1], velocity, lead_frames, extrap_kwargs={"outval": 0.0})
    return np.nan_to_num(np.asarray(forecast, dtype=np.float32), nan=0.0)


def _lk_extrapolate_args(args: tuple[np.ndarray, int]) -> np.ndarray:
    return lk_extrapolate(*args)


@MODELS.register("optical_flow")
class OpticalFlow(ForecastModel):
    """Dense Lucas-Kanade motion + semi-Lagrangian extrapolation (pysteps), no weights.

    Args:
        input_frames: T_in of the batches.
        output_frames: T_out, frames to extrapolate.
        motion_frames: how many of the latest input frames the motion is estimated from
            (pysteps' examples use 3; at least 2).
        workers: processes to spread the samples of a batch over (1 = in this process).
        modalities: only ``("vil",)`` is meaningful.
    """

    trainable: ClassVar[bool] = False

    def __init__(
        self,
        input_frames: int = 12,
        output_frames: int = 6,
        motion_frames: int = 3,
        workers: int = 1,
        modalities: Sequence[str] = ("vil",),
    ) -> None:
        super().__init__(modalities, input_frames, output_frames)
        if "vil" not in self.modalities:
            raise StormFusionError("optical_flow needs 'vil' in its modalities")
        if not 2 <= motion_frames <= input_frames:
            raise StormFusionError(
                f"optical_flow argument motion_frames={motion_frames} must be in "
                f"[2, input_frames={input_frames}]"
            )
        if workers < 1:
            raise StormFusionError(f"optical_flow argument workers={workers} must be >= 1")
        self.motion_frames = motion_frames
        self.workers = workers

    def forward(self, inputs: dict[str, Tensor], mask: Tensor) -> Tensor:
        vil = self.prepare_inputs(inputs, mask)["vil"]
        raw = denormalize("vil", vil[:, -self.motion_frames :].detach().float().cpu())
        samples = raw.clamp(0.0, VIL_SCALE).numpy()
        jobs = [(sample, self.output_frames) for sample in samples]
        if self.workers > 1 and len(jobs) > 1:
            results = list(_pool(self.workers).map(_lk_extrapolate_args, jobs))
        else:
            results = [lk_extrapolate(*job) for job in jobs]
        return torch.from_numpy(np.stack(results)).to(device=vil.device, dtype=torch.float32)
