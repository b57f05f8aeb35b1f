"""One sweep per process checks every connection's deadline: no timer object per request.

A connection keeps its next deadline as a number (:attr:`Timed.deadline`, loop time; 0 for
none) and sets it with one float store as it moves between states: head, body, keep-alive,
drain grace, linger. :class:`DeadlineSweep` looks at the connections it watches every
:attr:`DeadlineSweep.interval` seconds and calls ``on_deadline()`` on each whose deadline has
passed. So a timeout fires at most one interval late (0.25 s at most: the timeouts hold to
within half a second), and a keep-alive request costs a float store instead of creating and
cancelling a ``TimerHandle`` (about 1.8 µs). The sweep's own timer runs only while some
connection is watched: an idle process has no timer at all.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

#: The longest wait between two looks; shorter when a configured timeout is shorter.
MAX_INTERVAL = 0.25
#: The shortest wait between two looks, however short a timeout is configured.
MIN_INTERVAL = 0.01


class Timed(Protocol):
    """A connection the sweep watches."""

    deadline: float  # loop time; 0 = none

    def on_deadline(self) -> None:
        """The deadline passed (the connection decides what that means in its state)."""


class DeadlineSweep:
    """Checks the watched connections' deadlines a few times a second."""

    __slots__ = ("_handle", "_loop", "_watched", "interval")

    def __init__(self, loop: asyncio.AbstractEventLoop, shortest_timeout: float) -> None:
        self._loop = loop
        self._watched: set[Timed] = set()
        self._handle: asyncio.TimerHandle | None = None
        #: Half the shortest timeout, within [MIN_INTERVAL, MAX_INTERVAL]: a 0.2 s timeout
        #: fires between 0.2 and 0.3 s, a 5 s one between 5 and 5.25 s.
        self.interval = min(MAX_INTERVAL, max(MIN_INTERVAL, shortest_timeout / 2))

    def watch(self, conn: Timed) -> None:
        self._watched.add(conn)
        if self._handle is None:
            self._handle = self._loop.call_later(self.interval, self._sweep)

    def forget(self, conn: Timed) -> None:
        self._watched.discard(conn)

    def _sweep(self) -> None:
        now = self._loop.time()
        due = [c for c in self._watched if 0 < c.deadline <= now]
        for conn in due:
            conn.deadline = 0.0
            conn.on_deadline()
        self._handle = self._loop.call_later(self.interval, self._sweep) if self._watched else None

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
