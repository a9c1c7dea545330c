"""The three ways of installing the software agree: pyproject.toml (floors), the conda
environment envs/stormfusion.yaml and the Dockerfile (exact pins)."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
#: conda-only entries that are not Python dependencies of the package
CONDA_TOOLING = {"python", "pip"}


def _pyproject_floors() -> dict[str, Version | None]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    floors: dict[str, Version | None] = {}
    for spec in data["project"]["dependencies"]:
        req = Requirement(spec)
        lower = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
        floors[canonicalize_name(req.name)] = max(lower) if lower else None
    return floors


def _conda_pins() -> dict[str, Version | None]:
    env = yaml.safe_load((REPO / "envs" / "stormfusion.yaml").read_text())
    pins: dict[str, Version | None] = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for spec in dep["pip"]:
                req = Requirement(spec)
                exact = [Version(s.version) for s in req.specifier if s.operator == "=="]
                pins[canonicalize_name(req.name)] = exact[0] if exact else None
        else:
            name, _, version = dep.partition("=")
            pins[canonicalize_name(name)] = Version(version) if version else None
    return pins


def _dockerfile() -> str:
    return (REPO / "Dockerfile").read_text()


def _docker_pins() -> dict[str, Version]:
    text = _dockerfile()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.M))
    pins: dict[str, Version] = {}
    for name, version in re.findall(r'"([A-Za-z0-9_.-]+)==([^"]+)"', text):
        resolved = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], version)
        pins[canonicalize_name(name)] = Version(resolved)
    return pins


def test_conda_env_lists_exactly_the_package_dependencies() -> None:
    floors = _pyproject_floors()
    pins = _conda_pins()
    assert set(pins) - CONDA_TOOLING == set(floors)


def test_conda_env_pins_meet_pyproject_floors() -> None:
    pins = _conda_pins()
    for name, floor in _pyproject_floors().items():
        pin = pins[name]
        assert pin is not None, f"envs/stormfusion.yaml: {name} is not pinned"
        if floor is not None:
            assert pin >= floor, f"{name}: env pins {pin}, pyproject needs >= {floor}"


def test_dockerfile_pins_every_dependency_as_the_conda_env_does() -> None:
    docker = _docker_pins()
    conda = _conda_pins()
    for name in _pyproject_floors():
        assert name in docker, f"Dockerfile does not pin {name}"
        assert docker[name] == conda[name], f"{name}: Dockerfile {docker[name]}, env {conda[name]}"


def test_dockerfile_is_a_pinned_cuda_image_with_offline_lpips_weights() -> None:
    text = _dockerfile()
    base = re.search(r"^FROM (\S+)", text, flags=re.M)
    assert base is not None
    image, _, tag = base.group(1).partition(":")
    assert "cuda" in image + tag and tag and tag != "latest"
    assert re.search(r"--index-url \"\$\{TORCH_INDEX\}\"", text)
    assert re.search(r"^ARG TORCH_INDEX=https://download.pytorch.org/whl/cu\d+$", text, re.M)
    # the LPIPS backbone in the torch cache, the linear weights from the lpips package
    assert "TORCH_HOME=/opt/torch" in text
    assert "${TORCH_HOME}/hub/checkpoints/alexnet-owt-7be5be79.pth" in text
    assert "sha256sum" in text
    assert '"lpips==${LPIPS_VERSION}"' in text and "weights/v0.1/alex.pth" in text
    # runs as an unprivileged user
    users = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert users and users[-1] not in ("root", "0")


def test_dockerignore_keeps_the_build_context_small() -> None:
    lines = (REPO / ".dockerignore").read_text().split()
    assert lines[0] == "*" or "*" in lines
    assert {"!pyproject.toml", "!stormfusion/"} <= set(lines)


def test_every_rule_declares_its_container_and_conda_env() -> None:
    rules_dir = REPO / "workflow" / "rules"
    for smk in [REPO / "Snakefile", *sorted(rules_dir.glob("*.smk"))]:
        text = smk.read_text()
        rules = re.findall(r"^\s*rule (\w+):", text, flags=re.M)
        rules = [r for r in rules if r != "all"]
        containers = re.findall(r"^\s*container:\n\s*CONTAINER$", text, flags=re.M)
        condas = re.findall(r"^\s*conda:\n\s*CONDA_ENV$", text, flags=re.M)
        assert len(containers) == len(rules), f"{smk.name}: a rule without container:"
        assert len(condas) == len(rules), f"{smk.name}: a rule without conda:"
    common = (rules_dir / "common.smk").read_text()
    assert 'CONDA_ENV = "../../envs/stormfusion.yaml"' in common
    assert (rules_dir / "../../envs/stormfusion.yaml").resolve().is_file()


def test_conda_post_deploy_installs_the_package() -> None:
    script = REPO / "envs" / "stormfusion.post-deploy.sh"
    text = script.read_text()
    assert script.stat().st_mode & 0o111
    assert "pip install --no-deps -e" in text and "lpips==0.1.4" in text
