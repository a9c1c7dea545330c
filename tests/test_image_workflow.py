"""The GitHub Actions workflow that publishes the image: valid against the published
workflow schema (actionlint cannot be installed here: its PyPI package downloads the binary
from GitHub at build time; check-jsonschema carries the schema), pushes only on release
tags matching the package version, and bakes the commit in."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import tomllib
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "image.yml"


def _schema_check(path: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("check-jsonschema") or str(
        Path(sys.executable).with_name("check-jsonschema")
    )
    cmd = [exe, "--builtin-schema", "vendor.github-workflows", str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)


def _workflow() -> dict[Any, Any]:
    return yaml.safe_load(WORKFLOW.read_text())


def test_workflow_is_valid_against_the_github_schema(tmp_path: Path) -> None:
    proc = _schema_check(WORKFLOW)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    broken = _workflow()
    del broken["jobs"]["image"]["runs-on"]
    bad = tmp_path / "broken.yml"
    bad.write_text(yaml.safe_dump(broken))
    assert _schema_check(bad).returncode != 0  # the check does catch a broken workflow


def test_image_is_pushed_on_version_tags_with_the_commit_baked_in() -> None:
    flow = _workflow()
    triggers = flow[True]  # YAML 1.1 reads the key `on` as true
    assert triggers["push"] == {"tags": ["v*"]}
    steps = flow["jobs"]["image"]["steps"]
    [build] = [s for s in steps if s.get("uses", "").startswith("docker/build-push-action")]
    assert build["with"]["push"] == "${{ github.ref_type == 'tag' }}"
    assert "GIT_COMMIT=${{ github.sha }}" in build["with"]["build-args"]
    meta = next(s for s in steps if s.get("id") == "meta")["run"]
    assert '"${GITHUB_REF_NAME}" != "v${version}"' in meta  # the tag must be the version
    assert "image=ghcr.io/${owner}/stormfusion-sevir:${version}" in meta
    assert "permissions" in flow and flow["permissions"]["packages"] == "write"


def test_config_default_image_is_the_one_published_for_this_version() -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    assert config["container"] == f"docker://ghcr.io/stormfusion/stormfusion-sevir:{version}"
