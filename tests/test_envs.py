"""The three ways of installing the software agree: pyproject.toml (floors), the conda
environment envs/stormfusion.yaml and the Dockerfile (exact pins)."""

from __future__ import annotations

import itertools
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


def _pin_file(name: str) -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (REPO / "envs" / name).read_text().splitlines():
        if line and not line.startswith("#"):
            req = Requirement(line)
            [spec] = req.specifier
            assert spec.operator == "==", f"envs/{name}: {line} is not an exact pin"
            pins[canonicalize_name(req.name)] = Version(spec.version)
    return pins


def _pyproject_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        specs += extra
    return [Requirement(s) for s in specs]


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


def test_constraints_pin_every_requirement_within_pyproject() -> None:
    """envs/constraints.txt (`make constraints`) pins every requirement of the package and
    its extras, inside pyproject's ranges, and the conda env pins the same versions."""
    pins = _pin_file("constraints.txt")
    for req in _pyproject_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"envs/constraints.txt does not pin {name}: run make constraints"
        assert req.specifier.contains(pins[name]), f"{name}=={pins[name]} outside {req}"
    for name, version in _conda_pins().items():
        if name not in CONDA_TOOLING:
            assert version == pins[name], f"{name}: env pins {version}, constraints {pins[name]}"


def test_image_requirements_are_the_constraints_without_torch() -> None:
    image = _pin_file("image-requirements.txt")
    pins = _pin_file("constraints.txt")
    assert "torch" not in image and not any(n.startswith("nvidia-") for n in image)
    for name, version in image.items():
        assert pins.get(name) == version, f"{name}: image {version}, constraints {pins.get(name)}"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = {canonicalize_name(Requirement(s).name) for s in project["dependencies"]}
    assert runtime - {"torch"} <= set(image)


def test_dockerfile_installs_from_the_constraints_only() -> None:
    """No version is written in the Dockerfile but torch's, which must equal the pin."""
    text = _dockerfile()
    assert "-r /tmp/image-requirements.txt" in text  # builder: exactly these, as wheels
    assert "-r /opt/stormfusion/image-requirements.txt" in text
    assert "-c /opt/stormfusion/constraints.txt" in text
    assert re.findall(r'"([A-Za-z0-9_.-]+)==', text) == ["torch"]
    [torch] = re.findall(r"^ARG TORCH_VERSION=(\S+)$", text, flags=re.M)
    assert Version(torch) == _pin_file("constraints.txt")["torch"]


def test_dockerfile_is_a_cuda_image_with_a_cpu_variant_by_build_args() -> None:
    text = _dockerfile()
    assert not text.startswith("# syntax")  # BuildKit would fetch a frontend
    [base] = re.findall(r"^ARG BASE_IMAGE=(\S+)$", text, flags=re.M)
    image, _, tag = base.partition(":")
    assert image == "docker.io/nvidia/cuda" and tag and tag != "latest"  # fully qualified
    assert re.findall(r"^FROM (\S+)", text, flags=re.M) == ["${BASE_IMAGE}", "base", "base"]
    assert re.search(r'--index-url "\$\{TORCH_INDEX\}"', text)
    assert re.search(r"^ARG TORCH_INDEX=https://download.pytorch.org/whl/cu\d+$", text, re.M)
    assert (
        "libgl1" not in text
        and "opencv-python-headless" in (REPO / "envs" / "image-requirements.txt").read_text()
    )


def _stage(text: str, name: str) -> str:
    starts = [m.start() for m in re.finditer(r"^FROM ", text, flags=re.M)] + [len(text)]
    for begin, end in itertools.pairwise(starts):
        if re.match(rf"FROM \S+ AS {name}$", text[begin:].splitlines()[0]):
            return text[begin:end]
    raise AssertionError(f"no stage {name}")


def test_compiler_only_in_the_builder_stage() -> None:
    text = _dockerfile()
    assert "build-essential" in _stage(text, "builder")
    for stage in ("base", "runtime"):
        assert not re.search(r"build-essential|gcc|-dev\b", _stage(text, stage)), stage
    assert "--mount=type=bind,from=builder,source=/wheels" in _stage(text, "runtime")
    assert "--no-index --find-links /wheels" in _stage(text, "runtime")


def test_image_prepares_the_lpips_weights_as_make_setup_does() -> None:
    runtime = _stage(_dockerfile(), "runtime")
    assert "stormfusion lpips-weights" in runtime and "load_lpips()" in runtime
    assert "stormfusion lpips-weights" in (REPO / "Makefile").read_text()


def test_image_runs_its_own_code_as_a_user_of_its_own() -> None:
    text = _dockerfile()
    runtime = _stage(text, "runtime")
    assert "PYTHONSAFEPATH=1" in runtime and re.search(r"PYTHONPATH= ", runtime)
    assert re.search(r"^ARG GIT_COMMIT=", runtime, flags=re.M)
    assert "STORMFUSION_GIT_COMMIT=${GIT_COMMIT}" in runtime
    [uid] = re.findall(r"^ARG USER_UID=(\d+)$", runtime, flags=re.M)
    assert int(uid) != 1000  # Ubuntu bases already have uid 1000 (`ubuntu`)
    users = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert users and users[-1] not in ("root", "0")


def test_dockerignore_keeps_the_build_context_small() -> None:
    lines = (REPO / ".dockerignore").read_text().split()
    assert lines[0] == "*" or "*" in lines
    copied = set(re.findall(r"^COPY (?!--from)(.+) \S+$", _dockerfile(), flags=re.M))
    sources = {f"!{p.rstrip('/')}" for c in copied for p in c.split()}
    assert sources <= {line.rstrip("/") for line in lines}


def test_one_global_container_and_a_conda_env_per_rule() -> None:
    """One `container:` for the whole workflow (in the Snakefile, before any rule file is
    included, so it applies to every rule), none per rule; every rule its conda env."""
    rules_dir = REPO / "workflow" / "rules"
    snakefile = (REPO / "Snakefile").read_text()
    assert re.findall(r"^container: (.+)$", snakefile, flags=re.M) == ["CONTAINER"]
    first_rule_file = re.search(r'^include: "workflow/rules/(?!common)', snakefile, flags=re.M)
    assert first_rule_file and snakefile.index("container:") < first_rule_file.start()
    for smk in [REPO / "Snakefile", *sorted(rules_dir.glob("*.smk"))]:
        text = smk.read_text()
        rules = re.findall(r"^\s*rule (\w+):", text, flags=re.M)
        rules = [r for r in rules if r != "all"]
        # only training overrides it (no image around a multi-node srun launch)
        per_rule = re.findall(r"^\s+container:\n\s+(\w+)$", text, flags=re.M)
        assert per_rule in ([], ["train_container"]), f"{smk.name}: a rule's own container:"
        condas = re.findall(r"^\s*conda:\n\s*CONDA_ENV$", text, flags=re.M)
        assert len(condas) == len(rules), f"{smk.name}: a rule without conda:"
    common = (rules_dir / "common.smk").read_text()
    assert 'CONDA_ENV = "../../envs/stormfusion.yaml"' in common
    assert (rules_dir / "../../envs/stormfusion.yaml").resolve().is_file()


def test_conda_post_deploy_installs_the_package() -> None:
    script = REPO / "envs" / "stormfusion.post-deploy.sh"
    text = script.read_text()
    assert script.stat().st_mode & 0o111
    assert "pip install --no-deps" in text and "stormfusion lpips-weights" in text
