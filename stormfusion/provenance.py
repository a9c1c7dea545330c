"""Provenance: which config, data and code produced a result.

Every output that reaches a user (checkpoints, forecasts, scores, tables, figures) carries
the dictionary returned by :func:`provenance`, so a number can be traced back to the config
that asked for it, the events it was computed on and the code version that computed it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from stormfusion import __version__


def stable_hash(obj: Any, length: int = 12) -> str:
    """Short SHA-256 of a JSON-serialisable object, independent of key order."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


#: The commit an installed copy of the package was built from, baked into the image
#: (Dockerfile ``ARG GIT_COMMIT``), which has no ``.git`` to ask.
GIT_COMMIT_ENV = "STORMFUSION_GIT_COMMIT"


def git_commit(cwd: str | Path | None = None) -> str:
    """The commit of the running code: ``$STORMFUSION_GIT_COMMIT`` where set (the image),
    else git's answer for the package's folder (with ``-dirty`` when the tree has changes),
    else ``unknown``. With ``cwd``, git's answer for that checkout."""
    baked = os.environ.get(GIT_COMMIT_ENV, "").strip()
    if cwd is None and baked:
        return baked
    where = Path(cwd) if cwd is not None else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=where,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


#: Hash of the config the running step was asked for: each ``stormfusion`` step takes it
#: as ``--config-hash`` (the workflow passes the hash of its validated config, kept as
#: ``RESULTS/configs/<hash>.yaml``) and the command line records it here. Not a rerun
#: trigger: a step's output keeps the hash of the config it was made under.
_config_hash: str | None = None


def set_config_hash(value: str | None) -> None:
    """Record the config hash of this process's step (``stormfusion STEP --config-hash``)."""
    global _config_hash
    _config_hash = value or None


def describe() -> str:
    """``stormfusion VERSION (git COMMIT)``: what ``stormfusion --version`` prints."""
    return f"stormfusion {__version__} (git {git_commit()})"


def provenance(
    *, config_hash: str | None = None, data_fingerprint: str | None = None
) -> dict[str, str]:
    """The provenance record attached to outputs.

    ``config_hash`` defaults to the step's ``--config-hash`` (:func:`set_config_hash`).
    """
    return {
        "package_version": __version__,
        "git_commit": git_commit(),
        "config_hash": config_hash or _config_hash or "unknown",
        "data_fingerprint": data_fingerprint or "unknown",
    }


#: What a workflow runs inside an image to learn which code the image carries.
VERSION_PROBE = "stormfusion --version"


def checkout_description(root: str | Path) -> str:
    """:func:`describe` for the source checkout at ``root`` (its pyproject.toml version and
    git commit), whatever copy of the package is importable here."""
    import tomllib  # Python >= 3.11, as Snakemake 9 (the only caller) requires

    pyproject = tomllib.loads((Path(root) / "pyproject.toml").read_text(encoding="utf-8"))
    return f"stormfusion {pyproject['project']['version']} (git {git_commit(root)})"


def image_description(argv: list[str], timeout: float = 300) -> str | None:
    """Run ``argv`` (a container runtime executing :data:`VERSION_PROBE` in an image) and
    return the image's :func:`describe` line, or None when it gave none."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [line.strip() for line in out.stdout.splitlines() if line.startswith("stormfusion ")]
    return lines[-1] if out.returncode == 0 and lines else None


def image_code_warning(image: str, in_image: str | None, in_checkout: str) -> str | None:
    """A warning when the code in ``image`` may differ from the checkout's; None when the
    version and a clean commit agree. The strings are :func:`describe` lines."""
    if in_image is None:
        return (
            f"could not ask the image {image} which stormfusion it carries "
            f"('{VERSION_PROBE}' failed inside it); this checkout is {in_checkout}"
        )
    if in_image == in_checkout and not in_checkout.endswith("-dirty)"):
        return None
    why = "differs from" if in_image != in_checkout else "may differ from (uncommitted changes)"
    return (
        f"every job runs the image's code, which {why} this checkout's: image {image} has "
        f"{in_image}, the checkout is {in_checkout}. Build the image from this checkout "
        "(make image, then make sif) or point `container:` at the matching one."
    )
