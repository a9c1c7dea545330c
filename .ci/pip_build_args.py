"""Print the buildah/podman/docker build options that hand this machine's pip settings to
an image build, one option per line.

    python .ci/pip_build_args.py        # e.g. used by .ci/image and `make image`

A machine behind a TLS-inspecting proxy, with a package mirror or a local wheel directory,
configures pip for it (``pip config list``: files and ``PIP_*`` variables). A build does
not see that configuration: each setting below becomes a ``--build-arg PIP_<KEY>=...`` (the
Dockerfile declares them), and every local file or directory a setting names is mounted
read-only under ``/host-pip/N`` (``-v SRC:DST:ro``; for a local index, the folder above
it), with the value rewritten to match.
Nothing is printed where pip has no such settings.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

#: pip settings passed on (the Dockerfile declares a build argument for each).
KEYS = ("index-url", "extra-index-url", "find-links", "cert", "constraint", "default-timeout")
#: pip's own precedence, lowest first: configuration files, then the environment.
SCOPES = ("global", "user", "site", ":env:")
_LINE = re.compile(r"^(?P<scope>[^.]*)\.(?P<key>[a-z-]+)='(?P<value>.*)'$")


def pip_settings(listing: str) -> dict[str, str]:
    """``pip config list`` output -> {key: value} for :data:`KEYS`, highest scope winning."""
    found: dict[str, dict[str, str]] = {}
    for line in listing.splitlines():
        match = _LINE.match(line.strip())
        if match and match["key"] in KEYS:
            found.setdefault(match["key"], {})[match["scope"]] = match["value"]
    settings = {}
    for key, by_scope in found.items():
        ranked = sorted(by_scope, key=lambda s: SCOPES.index(s) if s in SCOPES else 1)
        settings[key] = by_scope[ranked[-1]]
    return settings


def build_options(settings: dict[str, str]) -> list[str]:
    """The ``-v`` mounts and ``--build-arg`` options for ``settings``."""
    mounts: dict[str, str] = {}
    options: list[str] = []

    def inside(path: str) -> str:
        if path not in mounts:
            mounts[path] = f"/host-pip/{len(mounts)}"
            options.append(f"--volume={path}:{mounts[path]}:ro")
        return mounts[path]

    for key, value in settings.items():
        words = []
        for word in value.split():
            local = Path(word[len("file://") :])
            if word.startswith("file://") and local.is_dir() and key.endswith("index-url"):
                # a PEP 503 index links its files relatively (../../files/...): mount
                # the folder above it too
                words.append(f"file://{inside(str(local.parent))}/{local.name}")
            elif word.startswith("file://") and local.exists():
                words.append("file://" + inside(str(local)))
            elif Path(word).is_absolute() and Path(word).exists():
                words.append(inside(word))
            else:
                words.append(word)
        options.append(f"--build-arg=PIP_{key.upper().replace('-', '_')}={' '.join(words)}")
    return options


def main() -> int:
    listing = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    sys.stdout.write("".join(f"{option}\n" for option in build_options(pip_settings(listing))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
