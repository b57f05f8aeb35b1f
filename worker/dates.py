"""The ``Date`` response header, formatted once per second by a loop timer.

Formatting an RFC 9110 date costs a few microseconds; doing it per request would be the
single largest avoidable cost on the plaintext path, so one timer per process refreshes a
cached value aligned to wall-clock second boundaries.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

# English names whatever the locale (RFC 9110 §5.6.7); email.utils would do the same, at
# about 1 MB of imports per worker.
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def format_http_date(timestamp: float) -> bytes:
    """``Tue, 24 Nov 2026 21:46:48 GMT`` (IMF-fixdate) for a POSIX timestamp."""
    t = time.gmtime(timestamp)
    return b"%s, %02d %s %04d %02d:%02d:%02d GMT" % (
        _DAYS[t.tm_wday].encode(),
        t.tm_mday,
        _MONTHS[t.tm_mon - 1].encode(),
        t.tm_year,
        t.tm_hour,
        t.tm_min,
        t.tm_sec,
    )


class DateClock:
    """Keeps :attr:`value` equal to the current HTTP date while started on a loop."""

    def __init__(self, on_change: Callable[[bytes], None] | None = None) -> None:
        self.value = format_http_date(time.time())
        self._on_change = on_change
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Refresh now and then at every second boundary until :meth:`stop`."""
        self._loop = loop
        self._tick()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._loop = None

    def _tick(self) -> None:
        now = time.time()
        value = format_http_date(now)
        if value != self.value:
            self.value = value
            if self._on_change is not None:
                self._on_change(value)
        if self._loop is not None:
            # Aim just past the next boundary so the new second has certainly begun.
            delay = 1.0 - (now % 1.0) + 0.001
            self._handle = self._loop.call_later(delay, self._tick)
