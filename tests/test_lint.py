"""Static checks run in CI: ruff, mypy, snakefmt, `snakemake --lint` (make lint) and the
60-line limit on functions."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from workflow_support import REPO, VENV_BIN, demo_config, snakemake, write_config


def _tool(*cmd: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / cmd[0]), *cmd[1:]],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _report(proc: subprocess.CompletedProcess[str]) -> str:
    return f"{' '.join(map(str, proc.args))} -> {proc.returncode}\n{proc.stdout}{proc.stderr}"


def test_ruff_check() -> None:
    proc = _tool("ruff", "check", "--no-cache", ".")
    assert proc.returncode == 0, _report(proc)


def test_ruff_format() -> None:
    proc = _tool("ruff", "format", "--check", "--no-cache", ".")
    assert proc.returncode == 0, _report(proc)


#: The house limit on a function's length (signature, docstring and body).
MAX_FUNCTION_LINES = 60


def _tracked_python() -> list[str]:
    return subprocess.run(
        ["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()


def test_no_function_is_over_60_lines() -> None:
    """Every function and method of every tracked .py file (package, benchmarks, tests)."""
    long = []
    for path in _tracked_python():
        for node in ast.walk(ast.parse((REPO / path).read_text(), path)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path}:{node.lineno} {node.name}: {lines} lines")
    assert not long, "\n".join(long)


def test_ruff_covers_every_python_file() -> None:
    """No exclude pattern hides a package: ruff (check and format share one file discovery)
    sees every tracked .py file, the data layer included."""
    tracked = _tracked_python()
    assert any(path.startswith("stormfusion/data/") for path in tracked)
    proc = _tool("ruff", "check", "--show-files", ".")
    assert proc.returncode == 0, _report(proc)
    seen = {Path(line).resolve().relative_to(REPO).as_posix() for line in proc.stdout.split()}
    missing = sorted(set(tracked) - seen)
    assert not missing, f"ruff skips {missing}"


def test_mypy_whole_package(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, _report(proc)


def test_snakefmt_check() -> None:
    proc = _tool("snakefmt", "--check", "Snakefile", "workflow/")
    assert proc.returncode == 0, _report(proc)


def test_snakemake_lint_on_the_demo_config(tmp_path: Path) -> None:
    work = tmp_path / "work"
    write_config(work, demo_config())
    proc = snakemake(work, "--lint", check=False)
    assert proc.returncode == 0, _report(proc)
