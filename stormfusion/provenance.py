"""Provenance: which config, data and code produced a result.

Every output that reaches a user (checkpoints, forecasts, scores, tables, figures) carries
the dictionary returned by :func:`provenance`, so a number can be traced back to the config
that asked for it, the events it was computed on and the code version that computed it.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

from stormfusion import __version__


def stable_hash(obj: Any, length: int = 12) -> str:
    """Short SHA-256 of a JSON-serialisable object, independent of key order."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def git_commit(cwd: str | Path | None = None) -> str:
    """The current git commit (with ``-dirty`` when the tree has changes), or ``unknown``."""
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
