"""Flow control for one connection, both ways.

Reading: the transport is paused while any reason to pause holds (the unread request body
passed its high-water mark, or pipelined requests are waiting their turn) and resumed when
none does. Writing: the transport calls ``pause_writing``/``resume_writing`` around its
buffer's high-water mark, and :meth:`FlowControl.drain` waits for room, failing fast once
the peer is gone so a sender never waits on a dead connection.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable

# One definition of each, in the base the HTTP protocol moves onto next.
from corral.worker.transport.base import (
    PAUSE_BODY,
    PAUSE_PIPELINE,
    READ_HIGH_WATER,
    ClientDisconnected,
)

__all__ = ["PAUSE_BODY", "PAUSE_PIPELINE", "READ_HIGH_WATER", "ClientDisconnected", "FlowControl"]


def _write_joined(transport: asyncio.BaseTransport, parts: list[bytes]) -> None:
    transport.write(b"".join(parts))  # type: ignore[attr-defined]


def _write_each(transport: asyncio.BaseTransport, parts: Iterable[bytes]) -> None:
    write = transport.write  # type: ignore[attr-defined]
    for part in parts:
        write(part)


class FlowControl:
    """Read pausing by reason, and write-side drain waiting."""

    __slots__ = (
        "_drain_waiter",
        "_transport",
        "gone",
        "read_paused",
        "write_batch",
        "write_parts",
        "write_paused",
    )

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self.read_paused = 0  # bit set of PAUSE_* reasons in force
        self.write_paused = False
        self.gone = False
        self._drain_waiter: asyncio.Future[None] | None = None
        #: Write several buffers without joining them. uvloop's writelines is one vectored
        #: send that honours the write high-water mark; asyncio's (3.12+) buffers without
        #: ever pausing the protocol, so a slow reader would grow the buffer without bound,
        #: and there each part is written on its own instead. (Partials of the transport,
        #: not methods of self: a bound method stored on self is a reference cycle, which
        #: would keep every closed connection's transport until the cycle collector runs.)
        vectored = type(transport).__module__.startswith("uvloop")
        self.write_parts: Callable[[Iterable[bytes]], None] = (
            transport.writelines  # type: ignore[attr-defined]
            if vectored
            else functools.partial(_write_each, transport)
        )
        #: Write many small buffers as one: vectored on uvloop, joined on asyncio.
        self.write_batch: Callable[[list[bytes]], None] = (
            transport.writelines  # type: ignore[attr-defined]
            if vectored
            else functools.partial(_write_joined, transport)
        )

    # --- reading -----------------------------------------------------------------------
    def pause_reading(self, reason: int) -> None:
        if not self.read_paused and not self.gone:
            self._transport.pause_reading()  # type: ignore[attr-defined]
        self.read_paused |= reason

    def resume_reading(self, reason: int) -> None:
        if self.read_paused & reason:
            self.read_paused &= ~reason
            if not self.read_paused and not self.gone:
                self._transport.resume_reading()  # type: ignore[attr-defined]

    # --- writing -----------------------------------------------------------------------
    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_drain()

    async def drain(self) -> None:
        """Wait until the write buffer is below its high-water mark."""
        if self.gone:
            raise ClientDisconnected("connection closed by the peer")
        if not self.write_paused:
            return
        waiter = self._drain_waiter
        if waiter is None:
            waiter = self._drain_waiter = asyncio.get_running_loop().create_future()
        await asyncio.shield(waiter)
        if self.gone:
            raise ClientDisconnected("connection closed by the peer")

    def connection_lost(self) -> None:
        """Wake every waiter; from now on :meth:`drain` raises at once."""
        self.gone = True
        self.write_paused = False
        self._wake_drain()

    def _wake_drain(self) -> None:
        """Release the sender parked in :meth:`drain`, if any."""
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)
