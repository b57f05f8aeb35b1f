"""The open-file limit (``RLIMIT_NOFILE``): raised at startup, and a warning when too low.

Every connection is a file descriptor. Out of descriptors, ``accept()`` fails with EMFILE
and clients are refused, so at startup corral raises its soft limit to the hard limit (an
unprivileged process may; nginx's ``worker_rlimit_nofile`` does the same, and gunicorn's
users do it by hand), and warns when even that is below what the settings need. Workers
inherit the raised limit through ``fork``.
"""

from __future__ import annotations

import resource
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from corral.config import Config

#: Descriptors a serving process needs besides its connections: listeners, the event loop,
#: the master's socketpair, log files, the app's own files and client connections.
RESERVE = 64


def needed(config: Config) -> int:
    """Descriptors one serving process may hold at once under these settings.

    With ``--limit-concurrency N``: N requests and WebSockets being served plus up to N
    connections waiting for a request head. Without it, at least a full accept backlog.
    """
    if config.limit_concurrency is not None:
        return 2 * config.limit_concurrency + RESERVE
    return config.backlog + RESERVE


def raise_soft_limit(limits: tuple[int, int] | None = None) -> tuple[int, int]:
    """Raise the soft limit as far as the hard limit allows; returns (soft, hard) after.

    An unlimited hard limit cannot be the soft one on Linux; the kernel's ``nr_open``
    ceiling is used then.
    """
    soft, hard = limits or resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else _nr_open()
    if target is None or (soft != resource.RLIM_INFINITY and soft >= target):
        return soft, hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft, hard
    return target, hard


def _nr_open() -> int | None:
    try:
        with open("/proc/sys/fs/nr_open", encoding="ascii") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def low_limit_warning(config: Config, soft: int, hard: int) -> str | None:
    """The startup warning when ``soft`` is below what ``config`` needs, else None."""
    want = needed(config)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return None
    if config.limit_concurrency is not None:
        why = f"--limit-concurrency {config.limit_concurrency} needs about {want}"
    else:
        why = f"a full accept backlog (--backlog {config.backlog}) needs about {want}"
    shown_hard = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
    return (
        f"The open file limit is {soft} (hard limit {shown_hard}) and {why}; past it new"
        " connections are refused. Raise it (ulimit -n, LimitNOFILE= in a systemd unit)."
    )
