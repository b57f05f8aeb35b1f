"""Log lines that clients cause, rate-limited per process so clients can't drive log volume.

A slowloris of 5,000 connections used to write 5,000 lines for its 408s, and 3,000 bad
PROXY headers 3,000 warnings. Each such line now has a :class:`Kind`: the first
:data:`BURST` of a kind in a :data:`WINDOW` appear word for word (uvicorn's wording), the
rest are counted, and once the window is over one summary line says how many were left out:
``... and 4,996 more 408s for slow request heads in the last 60 s``.

Only lines about one client's connection go through here. Lifecycle lines, app errors and
what the operator must act on are logged directly and never limited.

:class:`RateLimiter` is the decision, a pure function of (kind, time); :func:`client_log`
is the shell that owns the per-process limiter and a loop timer for the summaries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

logger = logging.getLogger("corral.error")

#: Lines of one kind written word for word per window: enough to see what is going on
#: (and to grep for a client), few enough that a flood costs a dozen lines a minute.
BURST = 10
#: The window, in seconds: one summary per kind per minute at most.
WINDOW = 60.0


class Kind(Enum):
    """A kind of client-caused line; the value names it in the summary."""

    BAD_REQUEST = "invalid HTTP requests"
    HEAD_TIMEOUT = "408s for slow request heads"
    BODY_TIMEOUT = "408s for stalled request bodies"
    PROXY_REFUSED = "refused PROXY headers"
    OVER_CONCURRENCY = "503s for exceeding the concurrency limit"
    HEAD_QUEUE_FULL = "closed connections waiting for a request head beyond the limit"
    SEND_STALL = "connections aborted for reading nothing"
    WS_PING_TIMEOUT = "WebSocket keepalive timeouts"
    ACCEPT_OVERLOAD = "accept errors for lack of file descriptors or memory"


@dataclass(slots=True)
class _Window:
    start: float
    seen: int = 0


@dataclass(frozen=True, slots=True)
class Summary:
    """``count`` lines of ``kind`` left out over the ``seconds`` their window lasted."""

    kind: Kind
    count: int
    seconds: float

    def text(self) -> str:
        return f"... and {self.count:,} more {self.kind.value} in the last {self.seconds:.0f} s"


class RateLimiter:
    """Decides which lines are written and which are counted into a summary.

    Windows are per kind and start with the kind's first line. :meth:`admit` says whether
    a line is written, and returns the summary of the kind's window that just ended, if
    it left lines out (to be written first). :meth:`due` returns the summaries of windows
    that ended with no line since, for a timer to write them.
    """

    def __init__(self, burst: int = BURST, window: float = WINDOW) -> None:
        self.burst = burst
        self.window = window
        self._windows: dict[Kind, _Window] = {}

    def admit(self, kind: Kind, now: float) -> tuple[bool, Summary | None]:
        summary = None
        current = self._windows.get(kind)
        if current is not None and now - current.start >= self.window:
            summary = self._close(kind, current, now)
            current = None
        if current is None:
            current = self._windows[kind] = _Window(now)
        current.seen += 1
        return current.seen <= self.burst, summary

    def due(self, now: float, *, every: bool = False) -> list[Summary]:
        """Summaries of the windows over by ``now``; with ``every``, of all windows (the
        process is stopping), each over the time it lasted."""
        summaries = []
        for kind, current in list(self._windows.items()):
            if every or now - current.start >= self.window:
                summary = self._close(kind, current, now)
                if summary is not None:
                    summaries.append(summary)
        return summaries

    def next_due(self) -> float | None:
        """When the earliest window that has left lines out ends (None: no such window)."""
        ends = [w.start + self.window for w in self._windows.values() if w.seen > self.burst]
        return min(ends, default=None)

    def _close(self, kind: Kind, current: _Window, now: float) -> Summary | None:
        del self._windows[kind]
        left_out = current.seen - self.burst
        if left_out <= 0:
            return None
        return Summary(kind, left_out, min(self.window, now - current.start))


class _ClientLog:
    """The per-process shell: writes admitted lines, and summaries when windows end."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.limiter = RateLimiter()
        self._clock = clock
        self._levels: dict[Kind, int] = {}
        self._timer: asyncio.TimerHandle | None = None

    def __call__(self, kind: Kind, level: int, message: str, *args: object) -> None:
        if not logger.isEnabledFor(level):
            return
        write, summary = self.limiter.admit(kind, self._clock())
        self._levels[kind] = level
        if summary is not None:
            logger.log(level, "%s", summary.text())
        if write:
            logger.log(level, message, *args)
        else:
            self._arm()

    def _arm(self) -> None:
        if self._timer is not None:
            return
        due = self.limiter.next_due()
        if due is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on a loop (a unit test): summaries come with the next line
            return
        self._timer = loop.call_later(max(0.0, due - self._clock()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._write(self.limiter.due(self._clock()))
        self._arm()

    def reset(self) -> None:
        """Forget every window, unwritten (tests start each case with a fresh budget)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.limiter = RateLimiter()

    def flush(self) -> None:
        """Write every pending summary now (the process is stopping)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._write(self.limiter.due(self._clock(), every=True))

    def _write(self, summaries: list[Summary]) -> None:
        for summary in summaries:
            logger.log(self._levels.get(summary.kind, logging.INFO), "%s", summary.text())


#: This process's client-caused lines: ``client_log(Kind.X, logging.INFO, msg, *args)``.
client_log = _ClientLog()
