"""Keepalive pings of one WebSocket connection (``--ws-ping-interval``/``--ws-ping-timeout``).

The sans-I/O protocol answers the peer's pings but never sends its own, so corral does: a
ping every interval, and when a timeout is set the next ping waits for the pong. A pong
missing for the timeout calls ``on_timeout`` (the connection closes with 1011). Each ping
carries a counter, so a late pong to an older ping does not count for the current one.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable


def _ignore(*_args: object) -> None:
    """The callback of a released :class:`Keepalive` (it never fires)."""


class Keepalive:
    """Loop timers for pings and their pongs; an interval of 0 disables both."""

    __slots__ = (
        "_count",
        "_expected",
        "_interval",
        "_loop",
        "_on_timeout",
        "_send_ping",
        "_timeout",
        "_timer",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        interval: float,
        timeout: float,
        send_ping: Callable[[bytes], None],
        on_timeout: Callable[[], None],
    ) -> None:
        self._loop = loop
        self._interval = interval
        self._timeout = timeout
        self._send_ping = send_ping
        self._on_timeout = on_timeout
        self._timer: asyncio.TimerHandle | None = None
        self._expected: bytes | None = None
        self._count = 0

    @property
    def active(self) -> bool:
        return self._timer is not None

    def start(self) -> None:
        if self._interval > 0:
            self._timer = self._loop.call_later(self._interval, self._ping)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._expected = None

    def release(self) -> None:
        """Stop for good (the connection is lost) and drop the callbacks: they are the
        connection's bound methods, a reference cycle that would keep the closed
        connection and its transport until the cycle collector runs."""
        self.stop()
        self._send_ping = self._on_timeout = _ignore

    def pong(self, data: bytes) -> None:
        """A pong arrived: if it answers the ping in flight, schedule the next ping."""
        if self._expected is None or data != self._expected:
            return  # unsolicited, or the answer to an older ping
        self._expected = None
        self.stop()
        self._timer = self._loop.call_later(self._interval, self._ping)

    def _ping(self) -> None:
        self._count += 1
        payload = struct.pack("!I", self._count)
        if self._timeout > 0:
            self._expected = payload
            self._timer = self._loop.call_later(self._timeout, self._missed)
        else:
            self._timer = self._loop.call_later(self._interval, self._ping)
        self._send_ping(payload)

    def _missed(self) -> None:
        self._timer = None
        self._expected = None
        self._on_timeout()
