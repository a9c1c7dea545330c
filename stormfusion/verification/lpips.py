"""LPIPS (Zhang et al. 2018), network "alex", version 0.1, in plain torch.

There is no torchvision here, so the AlexNet feature extractor is written out with
torchvision's parameter layout (``features.{0,3,6,8,10}.{weight,bias}``), which lets the real
ImageNet weights load unchanged. The five LPIPS linear layers (1 x 1 convolutions without
bias on the channel-normalised squared feature differences) use the ``lpips`` package's key
layout (``lin{0..4}.model.1.weight``).

Weights are searched on disk only (nothing is downloaded here):

1. a given directory holding the AlexNet file (``alexnet.pth`` as
   :mod:`stormfusion.verification.lpips_weights` converts it, or torchvision's
   ``alexnet-owt-7be5be79.pth``) and ``alex.pth``;
2. otherwise :func:`default_weights_dir` (``<python prefix>/share/stormfusion/lpips``, where
   ``make setup`` and the container put the converted weights);
3. otherwise ``$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth`` (``TORCH_HOME``
   defaulting to ``~/.cache/torch``) and ``weights/v0.1/alex.pth`` inside an installed
   ``lpips`` package.

Where they are absent, :func:`find_lpips_weights` says why and :func:`load_lpips` raises:
a number from random weights is never reported.

VIL is fed per frame, repeated to 3 channels and scaled to [-1, 1] (``x / 255 * 2 - 1``).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
from torch import Tensor, nn

from stormfusion.data.sevir import VIL_MAX
from stormfusion.errors import StormFusionError

logger = logging.getLogger(__name__)

#: torchvision's AlexNet weights file.
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
#: The AlexNet file the converter writes (same keys as torchvision's).
CONVERTED_ALEXNET_FILE = "alexnet.pth"
LINEAR_FILE = "alex.pth"
#: Channels of the five AlexNet stages LPIPS compares (after relu1 .. relu5).
CHANNELS = (64, 192, 384, 256, 256)
#: Index in ``features`` of the ReLU that ends each stage.
_STAGE_ENDS = (1, 4, 7, 9, 11)
# LPIPS input scaling (ImageNet statistics re-expressed for inputs in [-1, 1]).
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class AlexNetFeatures(nn.Module):
    """AlexNet's convolutional trunk with torchvision's module indices (``features.N``).

    Input (B, 3, H, W) (H, W >= 32 so that every stage is non-empty); :meth:`forward`
    returns the five ReLU outputs LPIPS compares.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=False),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=False),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=False),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=False),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=False),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _STAGE_ENDS:
                outs.append(x)
            if i == _STAGE_ENDS[-1]:
                break
        return outs


class LPIPS(nn.Module):
    """LPIPS distance, AlexNet v0.1: ``forward(x, y)``, images in [-1, 1], (B, 3, H, W) -> (B,)."""

    shift: Tensor
    scale: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.net = AlexNetFeatures()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in CHANNELS)
        self.register_buffer("shift", torch.tensor(_SHIFT).reshape(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).reshape(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def _unit(f: Tensor, eps: float = 1e-10) -> Tensor:
        return f / (torch.sqrt((f * f).sum(dim=1, keepdim=True)) + eps)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        fx = self.net((x - self.shift) / self.scale)
        fy = self.net((y - self.shift) / self.scale)
        total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for lin, a, b in zip(self.lins, fx, fy, strict=True):
            d = (self._unit(a) - self._unit(b)) ** 2
            total = total + lin(d).mean(dim=(1, 2, 3))
        return total

    @torch.no_grad()
    def vil_distance(self, forecast: Tensor, truth: Tensor) -> Tensor:
        """LPIPS of VIL frames: (N, H, W) on the 0..255 scale each -> (N,).

        Each frame is repeated to 3 channels and scaled to [-1, 1].
        """
        p = self.shift.device
        x = (forecast.to(p, torch.float32) / VIL_MAX * 2.0 - 1.0)[:, None].expand(-1, 3, -1, -1)
        y = (truth.to(p, torch.float32) / VIL_MAX * 2.0 - 1.0)[:, None].expand(-1, 3, -1, -1)
        return self(x, y)

    def load_weights(self, alexnet_path: Path, linear_path: Path) -> LPIPS:
        """Load torchvision's AlexNet file and the lpips linear-layer file; returns self."""
        alex = _load_state(alexnet_path)
        wanted = self.net.state_dict()
        missing = [k for k in wanted if k not in alex]
        if missing:
            raise StormFusionError(f"{alexnet_path}: not an AlexNet state dict, lacks {missing}")
        self.net.load_state_dict({k: alex[k] for k in wanted}, strict=True)
        lin = _load_state(linear_path)
        keys = [f"lin{i}.model.1.weight" for i in range(len(CHANNELS))]
        absent = [k for k in keys if k not in lin]
        if absent:
            raise StormFusionError(f"{linear_path}: not an LPIPS linear-layer file, lacks {absent}")
        for module, key in zip(self.lins, keys, strict=True):
            layer = cast(nn.Conv2d, module)
            if tuple(lin[key].shape) != tuple(layer.weight.shape):
                raise StormFusionError(
                    f"{linear_path}: {key} has shape {tuple(lin[key].shape)}, "
                    f"expected {tuple(layer.weight.shape)}"
                )
            layer.weight.copy_(lin[key])
        return self


def _load_state(path: Path) -> dict[str, Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad files
        raise StormFusionError(f"{path}: cannot read as a torch state dict ({exc})") from exc
    if not isinstance(state, dict):
        raise StormFusionError(f"{path}: expected a state dict, got {type(state).__name__}")
    try:
        for k, v in state.items():
            if not (isinstance(k, str) and isinstance(v, Tensor)):
                raise TypeError
    except (TypeError, AttributeError):
        raise StormFusionError(f"{path}: expected a state dict of tensors") from None
    return state


@dataclass(frozen=True)
class LpipsWeights:
    """Where the LPIPS weights are, or why they are not available."""

    alexnet: Path | None
    linear: Path | None
    reason: str = ""

    @property
    def available(self) -> bool:
        return self.alexnet is not None and self.linear is not None


def _torch_home() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "torch"
    return Path(os.environ.get("TORCH_HOME", default))


def _lpips_package_file() -> Path | None:
    spec = importlib.util.find_spec("lpips")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "weights" / "v0.1" / LINEAR_FILE


def default_weights_dir() -> Path:
    """Where ``stormfusion lpips-weights`` puts the converted weights by default."""
    return Path(sys.prefix) / "share" / "stormfusion" / "lpips"


def _in_directory(d: Path) -> LpipsWeights:
    alex = next((d / n for n in (CONVERTED_ALEXNET_FILE, ALEXNET_FILE) if (d / n).is_file()), None)
    lin = d / LINEAR_FILE
    absent = [] if alex else [f"{d / CONVERTED_ALEXNET_FILE} (or {ALEXNET_FILE})"]
    absent += [] if lin.is_file() else [str(lin)]
    if absent:
        return LpipsWeights(None, None, f"LPIPS weights not found: {', '.join(absent)}")
    return LpipsWeights(alex, lin)


def find_lpips_weights(directory: str | os.PathLike[str] | None = None) -> LpipsWeights:
    """Locate the two weight files (see the module docstring); never downloads."""
    if directory is not None:
        return _in_directory(Path(directory))
    installed = _in_directory(default_weights_dir())
    if installed.available:
        return installed
    alex = _torch_home() / "hub" / "checkpoints" / ALEXNET_FILE
    lin_path = _lpips_package_file()
    reasons = [f"{default_weights_dir()} holds no converted weights (run 'make setup')"]
    if not alex.is_file():
        reasons.append(f"{alex} is absent (torchvision's AlexNet weights)")
    if lin_path is None:
        reasons.append("the lpips package (linear-layer weights) is not installed")
    elif not lin_path.is_file():
        reasons.append(f"{lin_path} is absent")
    if len(reasons) > 1:
        return LpipsWeights(None, None, "LPIPS weights not found: " + "; ".join(reasons))
    return LpipsWeights(alex, lin_path)


def load_lpips(
    weights_dir: str | os.PathLike[str] | None = None, device: torch.device | str = "cpu"
) -> LPIPS:
    """The LPIPS network with real weights on ``device``: inputs (B, 3, H, W) in [-1, 1]
    -> (B,).

    Raises:
        StormFusionError: the weights are absent (saying where they were looked for) or
            unreadable.
    """
    found = find_lpips_weights(weights_dir)
    if found.alexnet is None or found.linear is None:
        raise StormFusionError(found.reason)
    model = LPIPS().load_weights(found.alexnet, found.linear).to(device)
    logger.info("LPIPS (alex v0.1) loaded from %s and %s", found.alexnet, found.linear)
    return model
