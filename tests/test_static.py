"""Static checks run with the suite: ruff and mypy --strict over the package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "server"


def _tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            pytest.skip(f"{name} is not installed")
        return found
    return str(path)


pytestmark = pytest.mark.skipif(not SOURCE.is_dir(), reason="needs the source checkout")


def test_ruff_clean() -> None:
    """The package and tests pass ruff's lint rules."""
    result = subprocess.run(
        [_tool("ruff"), "check", "server", "worker", "supervisor", "tests", "examples"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict(tmp_path: Path) -> None:
    """The package type-checks under mypy --strict, as installed (corral = server/)."""
    package = tmp_path / "corral"
    package.mkdir()
    for entry in SOURCE.iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    (package / "worker").symlink_to(ROOT / "worker")
    (package / "supervisor").symlink_to(ROOT / "supervisor")
    env = dict(os.environ, MYPYPATH=str(tmp_path))
    result = subprocess.run(
        [
            _tool("mypy"),
            "--strict",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            "-p",
            "corral",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
