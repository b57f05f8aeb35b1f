"""Container-aware sizing: ``--workers auto`` and ``--limit-worker-memory`` shares and units.

A container's CPU and memory limits live in its cgroup, not in ``os.cpu_count()``: a pod
limited to 2 CPUs on a 64-core node that forks 64 workers thrashes, and one that sizes its
memory limit from the node's RAM gets OOM-killed while recycling. These functions read the
cgroup files (v2 first, then v1), falling back to the CPU affinity mask and physical memory.

``CORRAL_CGROUP_ROOT`` (default ``/sys/fs/cgroup``) says where the cgroup files are; the
tests point it at a directory of fake ones.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from corral.errors import ConfigError

_MIB = 1024 * 1024
#: cgroup v1 reports "no limit" as a huge page-aligned number instead of "max".
_V1_UNLIMITED = 1 << 60
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(%|[kmgt]i?b?|b)?\s*", re.IGNORECASE)
_UNIT_BYTES = {
    "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": _MIB, "mb": 1000**2, "mib": _MIB,
    "g": 1024**3, "gb": 1000**3, "gib": 1024**3, "t": 1024**4, "tb": 1000**4, "tib": 1024**4,
    # Kubernetes spells binary units without the B: 512Mi, 1Gi.
    "ki": 1024, "mi": _MIB, "gi": 1024**3, "ti": 1024**4,
}  # fmt: skip


def cgroup_root(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get("CORRAL_CGROUP_ROOT", "/sys/fs/cgroup"))


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cpu_limit(root: Path) -> tuple[int, str]:
    """How many CPUs this process may use, and where that figure came from."""
    v2 = _read(root / "cpu.max")
    if v2 is not None:
        quota, _, period = v2.partition(" ")
        if quota != "max" and period:
            return max(1, math.ceil(int(quota) / int(period))), f"cgroup cpu.max {quota}/{period}"
    for folder in ("cpu", "cpu,cpuacct"):
        quota_text = _read(root / folder / "cpu.cfs_quota_us")
        period_text = _read(root / folder / "cpu.cfs_period_us")
        if quota_text and period_text and int(quota_text) > 0:
            cpus = max(1, math.ceil(int(quota_text) / int(period_text)))
            return cpus, f"cgroup v1 cfs_quota_us {quota_text}/{period_text}"
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)), "CPU affinity"
    return os.cpu_count() or 1, "os.cpu_count()"


def memory_limit(root: Path) -> tuple[int | None, str]:
    """The container's memory limit in bytes (None when it has none), and its source."""
    v2 = _read(root / "memory.max")
    if v2 is not None and v2 != "max":
        return int(v2), "cgroup memory.max"
    v1 = _read(root / "memory" / "memory.limit_in_bytes")
    if v1 is not None and int(v1) < _V1_UNLIMITED:
        return int(v1), "cgroup v1 memory.limit_in_bytes"
    return None, "no container limit"


def size_problem(value: Any) -> str | None:
    """Why ``value`` is not a memory size (MiB, a size with a unit, or a percentage)."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        return None
    match = _SIZE.fullmatch(str(value)) if isinstance(value, str) else None
    if match is None:
        return "must be MiB (512), a size with a unit (512MiB, 1GiB) or a share (20%)"
    number, unit = float(match.group(1)), (match.group(2) or "").lower()
    if number <= 0 or (unit == "%" and number > 100):
        return "must be greater than zero (and a share at most 100%)"
    return None


def memory_mib(value: int | str, root: Path) -> tuple[int, str | None]:
    """``--limit-worker-memory`` in MiB, and how a share was computed (None otherwise)."""
    if isinstance(value, int):
        return value, None
    match = _SIZE.fullmatch(value)
    assert match is not None  # checked by size_problem
    number, unit = float(match.group(1)), (match.group(2) or "").lower()
    if unit == "%":
        limit, source = memory_limit(root)
        if limit is None:
            limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            source = "physical memory (no container limit)"
        mib = max(1, int(limit * number / 100 / _MIB))
        return mib, f"{value} of {limit // _MIB} MiB ({source})"
    if not unit:
        return max(1, int(number)), None
    return max(1, int(number * _UNIT_BYTES[unit] / _MIB)), None


def workers_problem(value: Any) -> str | None:
    if value is None or value == "auto":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return None if value > 0 else "must be greater than zero"
    return "must be a number of workers or 'auto'"


def resolve(settings: dict[str, Any], environ: Mapping[str, str] | None = None) -> None:
    """Turn ``workers="auto"`` and memory shares/units in ``settings`` into numbers, in place.

    What was found is added to ``settings["notices"]`` as (level, message) pairs, logged once
    logging is configured: the worker count and its source, a share's arithmetic, and a
    warning when the workers' memory limits, plus one overlapping replacement (recycling
    starts the new worker before the old one leaves), exceed the container's memory.
    """
    root = cgroup_root(environ)
    notices: list[tuple[str, str]] = list(settings.get("notices", ()))
    workers = settings.get("workers")
    if isinstance(workers, str):
        if workers.strip().lower() != "auto":
            try:
                workers = int(workers)
            except ValueError:
                raise ConfigError("--workers", "must be a number of workers or 'auto'") from None
        else:
            workers, source = cpu_limit(root)
            notices.append(("info", f"{workers} workers ({source})"))
        settings["workers"] = workers
    memory = settings.get("limit_worker_memory")
    if memory is not None:
        problem = size_problem(memory)
        if problem:
            raise ConfigError("--limit-worker-memory", problem)
        mib, how = memory_mib(memory, root)
        settings["limit_worker_memory"] = mib
        if how:
            notices.append(("info", f"--limit-worker-memory {mib} MiB ({how})"))
        limit, source = memory_limit(root)
        count = workers if isinstance(workers, int) else 1
        if limit is not None and (count + 1) * mib * _MIB > limit:
            notices.append(
                (
                    "warning",
                    f"--limit-worker-memory {mib} MiB x ({count} workers + 1 overlapping"
                    f" replacement) = {(count + 1) * mib} MiB exceeds the container's"
                    f" {limit // _MIB} MiB ({source}); a recycle may get it OOM-killed",
                )
            )
    if notices:
        settings["notices"] = tuple(notices)
