"""The --reload file watcher (stat polling), without processes."""

from __future__ import annotations

import os
from pathlib import Path

from corral.supervisor.reload import Watcher


def _touch(path: Path, text: str = "x = 1\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    # Bump the mtime explicitly: two writes within the filesystem's timestamp granularity
    # would otherwise look unchanged.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_detects_edit_add_and_remove(tmp_path: Path) -> None:
    """Edited, added and removed .py files are reported once each."""
    _touch(tmp_path / "app.py")
    _touch(tmp_path / "gone.py")
    watcher = Watcher([str(tmp_path)])
    assert watcher.check() == []
    _touch(tmp_path / "app.py", "x = 2\n")
    _touch(tmp_path / "new.py")
    (tmp_path / "gone.py").unlink()
    changed = {p.name for p in watcher.check()}
    assert changed == {"app.py", "new.py", "gone.py"}
    assert watcher.check() == []


def test_default_excludes_and_non_python_files(tmp_path: Path) -> None:
    """.venv, .git, node_modules and __pycache__ are skipped; only *.py by default."""
    watcher = Watcher([str(tmp_path)])
    for d in (".venv", ".git", "node_modules", "__pycache__"):
        _touch(tmp_path / d / "mod.py")
    _touch(tmp_path / "notes.txt")
    assert watcher.check() == []


def test_include_and_exclude_patterns(tmp_path: Path) -> None:
    """--reload-include adds patterns; --reload-exclude removes files and directories."""
    watcher = Watcher(
        [str(tmp_path)], includes=["*.html"], excludes=["skip_*.py", "build"], delay=0.5
    )
    assert watcher.interval == 0.5
    _touch(tmp_path / "page.html")
    _touch(tmp_path / "skip_me.py")
    _touch(tmp_path / "build" / "out.html")
    assert [p.name for p in watcher.check()] == ["page.html"]


def test_multiple_dirs(tmp_path: Path) -> None:
    """Every --reload-dir is watched."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    watcher = Watcher([str(a), str(b)])
    _touch(b / "m.py")
    assert [p.name for p in watcher.check()] == ["m.py"]
