"""The ``--reload`` file watcher: stat polling driven by the master's own loop.

The master is single-threaded by design, so the watcher does no waiting of its own: the
master calls :meth:`Watcher.check` when ``next_check`` is due and folds that time into its
select timeout. Polling mtimes of the watched tree every ``--reload-delay`` seconds is cheap
for source trees; a change triggers the same ready-gated reload as SIGHUP.

watchfiles is deliberately not used even when installed: its native watcher runs a thread,
and the master must stay single-threaded because it forks (a fork copies only the calling
thread, with any lock another thread held copied locked).
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from corral.config import Config

logger = logging.getLogger("corral.error")

#: Directories never worth watching: virtualenvs, VCS data, JS deps, bytecode caches.
DEFAULT_EXCLUDE_DIRS = frozenset({".venv", "venv", ".git", ".hg", "node_modules", "__pycache__"})
DEFAULT_INCLUDES = ("*.py",)
#: A floor on the poll interval so a --reload-delay of 0 doesn't spin the master.
MIN_INTERVAL = 0.1


class Watcher:
    """Detects changed, added or removed files under the reload directories."""

    def __init__(
        self,
        dirs: Iterable[str],
        includes: Iterable[str] = (),
        excludes: Iterable[str] = (),
        delay: float = 0.25,
    ) -> None:
        self.dirs = [Path(d).resolve() for d in (list(dirs) or [os.getcwd()])]
        self.includes = DEFAULT_INCLUDES + tuple(includes)
        self.excludes = tuple(excludes)
        self.interval = max(MIN_INTERVAL, delay)
        self._mtimes = self._scan()

    @classmethod
    def from_config(cls, config: Config) -> Watcher:
        """The watcher for --reload-dir/-include/-exclude/-delay; logs what it watches."""
        watcher = cls(
            config.reload_dirs, config.reload_includes, config.reload_excludes, config.reload_delay
        )
        logger.info(
            "Will watch for changes in these directories: %s", [str(d) for d in watcher.dirs]
        )
        return watcher

    def _excluded_dir(self, name: str) -> bool:
        return name in DEFAULT_EXCLUDE_DIRS or any(
            fnmatch.fnmatch(name, pattern) for pattern in self.excludes
        )

    def _wanted(self, path: Path) -> bool:
        name = path.name
        if any(fnmatch.fnmatch(name, p) or path.match(p) for p in self.excludes):
            return False
        return any(fnmatch.fnmatch(name, p) or path.match(p) for p in self.includes)

    def _files(self) -> Iterator[Path]:
        for root in self.dirs:
            for directory, subdirs, files in os.walk(root):
                subdirs[:] = [d for d in subdirs if not self._excluded_dir(d)]
                for name in files:
                    path = Path(directory, name)
                    if self._wanted(path):
                        yield path

    def _scan(self) -> dict[Path, int]:
        mtimes = {}
        for path in self._files():
            try:
                mtimes[path] = os.stat(path).st_mtime_ns
            except OSError:
                continue  # removed between listing and stat
        return mtimes

    def check(self) -> list[Path]:
        """Files changed since the last check (sorted); updates the baseline."""
        current = self._scan()
        changed = {p for p, m in current.items() if self._mtimes.get(p) != m}
        changed |= self._mtimes.keys() - current.keys()
        self._mtimes = current
        return sorted(changed)
