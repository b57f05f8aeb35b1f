"""Worker memory sampling: unique set size (USS) through psutil.

USS, not RSS: under ``--preload`` every worker's RSS counts the pages it shares
copy-on-write with the master, so RSS would make each worker look as big as the whole app.
USS counts only the pages a process would free by exiting.
"""

from __future__ import annotations

from collections.abc import Iterable

#: The master samples about once a second: reading smaps costs a few milliseconds per
#: worker, and memory grows far slower than that.
SAMPLE_INTERVAL = 1.0

MIB = 1024 * 1024


def uss_mib(pid: int) -> float | None:
    """A process's USS in MiB, or None if it vanished or can't be read."""
    import psutil  # only with --limit-memory: 1.5 MB that every forked worker would carry

    try:
        info = psutil.Process(pid).memory_full_info()
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied, OSError):
        return None
    return float(info.uss) / MIB


def sample(pids: Iterable[int]) -> dict[int, float]:
    """USS in MiB for each pid still readable; vanished processes are simply left out."""
    out = {}
    for pid in pids:
        value = uss_mib(pid)
        if value is not None:
            out[pid] = value
    return out
