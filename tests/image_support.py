"""Helpers for the image tests: build the CPU variant of the Dockerfile (.ci/image), run
commands inside it, and a stand-in `apptainer` that runs each job inside it.

Apptainer is not installable here (neither Debian nor PyPI packages it), so the stand-in
does what `apptainer exec` does for Snakemake with podman on the image's root file system:
the image's environment over the caller's (Apptainer gives the image's variables
precedence), the caller's user, the working directory and `--bind` paths mounted, the
root file system read-only (as a SIF is). It does not test image conversion to SIF, `--nv`
GPU binding or pulling from a registry (docs/cluster.md lists these).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGE_TOOL = REPO / ".ci" / "image"
#: The tag the tests build (and remove afterwards, unless STORMFUSION_KEEP_IMAGE=1).
TEST_TAG = "localhost/stormfusion-sevir:test-cpu"


@dataclass(frozen=True)
class BuiltImage:
    """A built image: its tag, its mounted root file system and its environment."""

    tag: str
    rootfs: Path
    env: dict[str, str]

    @property
    def commit(self) -> str:
        return self.env["STORMFUSION_GIT_COMMIT"]


def tool_env() -> dict[str, str]:
    """Environment for .ci/image: a private image store under the cache."""
    env = dict(os.environ)
    cache = Path(env.get("STORMFUSION_CACHE", Path.home() / ".cache" / "stormfusion"))
    env.setdefault("STORMFUSION_IMAGE_STORE", str(cache / "containers"))
    env["PYTHON"] = sys.executable
    return env


def image_tool(*args: str, timeout: float = 120) -> str:
    """Run .ci/image; its stdout. A failure raises with the tool's own explanation."""
    proc = subprocess.run(
        [str(IMAGE_TOOL), *args],
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f".ci/image {' '.join(args)} failed ({proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc.stdout


def podman_env() -> dict[str, str]:
    """CONTAINERS_* settings .ci/image writes for its private store."""
    store = Path(tool_env()["STORMFUSION_IMAGE_STORE"])
    return {
        "CONTAINERS_CONF": str(store / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(store / "storage.conf"),
    }


def run_in_image(
    image: BuiltImage,
    argv: Sequence[str],
    *,
    user: str | None = None,
    mounts: Sequence[tuple[Path, str]] = (),
    workdir: str = "/work",
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """`podman run` of ``argv`` on the image's root file system (read-only), with the
    image's environment (plus ``env``) and ``mounts`` (host path, container path)."""
    cmd = ["podman", "run", "--rm", "--read-only", "--network", "host", "--workdir", workdir]
    for key, value in {**image.env, **(env or {})}.items():
        cmd += ["--env", f"{key}={value}"]
    for host, inside in mounts:
        cmd += ["--volume", f"{host}:{inside}"]
    if user is not None:
        cmd += ["--user", user]
    cmd += ["--rootfs", str(image.rootfs), *argv]
    return subprocess.run(
        cmd,
        env={**os.environ, **podman_env()},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


#: The stand-in `apptainer`: logs each call as a JSON line in $APPTAINER_STANDIN_LOG and
#: runs `apptainer exec [OPTIONS] IMAGE COMMAND...` inside the built image.
STANDIN = '''\
#!{python}
"""Stand-in for apptainer: run `exec` inside the built image (podman on its root fs)."""
import json
import os
import subprocess
import sys

argv = sys.argv[1:]
if argv == ["--version"]:
    print("apptainer version 1.3.4")  # Snakemake parses the last word
    sys.exit(0)
with open(os.environ["APPTAINER_STANDIN_LOG"], "a") as log:
    log.write(json.dumps({{"argv": argv, "cwd": os.getcwd()}}) + "\\n")
if "exec" not in argv:
    sys.exit(f"stand-in apptainer: only exec is supported: {{argv}}")
rest = argv[argv.index("exec") + 1 :]
home, pwd, binds = os.getcwd(), os.getcwd(), []
while rest and rest[0].startswith("-"):
    option = rest.pop(0)
    if option == "--home":
        home = rest.pop(0)
    elif option == "--pwd":
        pwd = rest.pop(0)
    elif option in ("--bind", "-B"):
        binds += [b.split(":")[0] for b in rest.pop(0).split(",")]
    elif option not in ("--nv", "--quiet", "--silent", "--cleanenv", "--containall"):
        sys.exit(f"stand-in apptainer: option {{option}} is not supported")
command = rest[1:]  # rest[0] is the image path; the image is the one the tests built
image_env = json.loads(os.environ["STANDIN_IMAGE_ENV"])
env = {{k: v for k, v in os.environ.items() if "\\n" not in v and not k.startswith("CONTAINERS_")}}
env.update(image_env)  # Apptainer: the image's variables win over the caller's
env["HOME"] = home
cmd = ["podman", "run", "--rm", "--read-only", "--network", "host", "--workdir", pwd,
       "--user", f"{{os.getuid()}}:{{os.getgid()}}"]
for path in dict.fromkeys([os.getcwd(), home, *binds]):
    if os.path.exists(path):
        cmd += ["--volume", f"{{path}}:{{path}}"]
for key, value in env.items():
    cmd += ["--env", f"{{key}}={{value}}"]
cmd += ["--rootfs", os.environ["STANDIN_ROOTFS"], *command]
sys.exit(subprocess.call(cmd))
'''


def install_image_standin(bindir: Path) -> Path:
    """Write the stand-in as `apptainer` and `singularity` into ``bindir``."""
    bindir.mkdir(parents=True, exist_ok=True)
    for name in ("apptainer", "singularity"):
        exe = bindir / name
        exe.write_text(STANDIN.format(python=sys.executable))
        exe.chmod(0o755)
    return bindir


def standin_env(image: BuiltImage, log: Path) -> dict[str, str]:
    """What the stand-in needs from its caller's environment."""
    return {
        **podman_env(),
        "APPTAINER_STANDIN_LOG": str(log),
        "STANDIN_ROOTFS": str(image.rootfs),
        "STANDIN_IMAGE_ENV": json.dumps(image.env),
    }
