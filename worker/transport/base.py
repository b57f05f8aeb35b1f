"""What every connection protocol does with its transport: flow control both ways, the stall
guard and ``ClientDisconnected``.

:class:`TransportBase` is the base class of the HTTP/1.1 protocol and of the WebSocket
connection (and of HTTP/2 when it comes), so that they pause, wait and give up on a peer in
exactly one way:

- reading is paused while any *reason* holds (the ``PAUSE_*`` bits below, one namespace for
  every protocol) and resumed when none is left;
- the transport calls :meth:`~TransportBase.pause_writing` and
  :meth:`~TransportBase.resume_writing` around its buffer's high-water mark, and a sender
  awaits :meth:`~TransportBase.drain`, which fails fast with :class:`ClientDisconnected` once
  the peer is gone, so nothing ever waits on a dead connection;
- while the buffer is over its high-water mark, and after a close with bytes still queued,
  a :class:`~corral.worker.transport.stall.StallGuard` checks every ``--timeout-send``
  seconds that the client read something, and resets the connection when it read nothing
  (nginx's ``send_timeout``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import ClassVar

from corral.worker.transport.stall import StallGuard, reset

#: Reasons to pause reading (bit flags). Reading resumes only when none is left.
PAUSE_BODY = 1  # HTTP: the app is behind on the request body (READ_HIGH_WATER unread)
PAUSE_PIPELINE = 2  # HTTP: a pipelined request waits for the previous response
PAUSE_QUEUE = 4  # WebSocket: the app has --ws-max-queue messages it has not received
PAUSE_HANDSHAKE = 8  # WebSocket: bytes sent before the accept passed their buffer limit
PAUSE_WRITE = 16  # the transport is over its write high-water mark (see TransportBase)

#: Pause reading once this much request body sits unread by the app. 64 KiB matches the
#: socket read size, so one read past the mark is the most that can pile up. The low-water
#: mark is zero: each ``receive()`` hands the app everything buffered, so reading resumes as
#: soon as the app asks for more.
READ_HIGH_WATER = 65536


class ClientDisconnected(OSError):
    """The client has gone: raised by ``send()`` (ASGI spec: an OSError subclass)."""


# --- the base class ----------------------------------------------------------------------------
#: Transport classes whose ``writelines`` is one vectored send that honours the write
#: high-water mark (uvloop's). asyncio's (3.12+) buffers without ever pausing the protocol,
#: so a slow reader would grow the buffer without bound; there each part is written alone.
_VECTORED: dict[type, bool] = {}


def _vectored(kind: type) -> bool:
    known = _VECTORED.get(kind)
    if known is None:
        known = _VECTORED[kind] = kind.__module__.startswith("uvloop")
    return known


class TransportBase(asyncio.Protocol):
    """Flow control both ways and the stall guard, for one connection's transport.

    A subclass calls :meth:`attach` once it has its transport (in ``connection_made``, or
    when it takes over a transport), calls :meth:`transport_lost` from its
    ``connection_lost``, and provides ``_loop`` and ``client_text`` (the peer for log lines).
    """

    __slots__ = (
        "_drain_waiter",
        "_stall",
        "_timeout_send",
        "gone",
        "read_paused",
        "transport",
        "write_paused",
    )

    #: Also pause reading while the transport is over its write high-water mark. WebSocket
    #: sets it: the protocol answers pings by itself, and a peer that reads nothing must not
    #: make corral queue pongs without bound. HTTP needs no such gate: an app that does not
    #: read the request body is paused by PAUSE_BODY, pipelined requests by PAUSE_PIPELINE.
    pause_reading_with_writing: ClassVar[bool] = False

    transport: asyncio.Transport
    read_paused: int  # bit set of the PAUSE_* reasons in force
    write_paused: bool  # the transport is over its high-water mark
    gone: bool  # connection_lost was called: no more reading, writing or waiting
    _loop: asyncio.AbstractEventLoop

    def attach(self, transport: asyncio.Transport, timeout_send: float) -> None:
        """Start on ``transport``; ``timeout_send`` is ``--timeout-send`` (0 disables it)."""
        self.transport = transport
        self.read_paused = 0
        self.write_paused = False
        self.gone = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._stall: StallGuard | None = None
        self._timeout_send = timeout_send

    @property
    def client_text(self) -> str:
        """``host:port`` of the peer, for log lines (the subclass knows it)."""
        raise NotImplementedError

    # --- reading -------------------------------------------------------------------------------
    def pause_reading(self, reason: int) -> None:
        """Stop reading until ``reason`` (and every other reason in force) is resumed."""
        if not self.read_paused and not self.gone:
            self.transport.pause_reading()
        self.read_paused |= reason

    def resume_reading(self, reason: int) -> None:
        """Drop ``reason``; reading resumes once no reason is left."""
        if self.read_paused & reason:
            self.read_paused &= ~reason
            if not self.read_paused and not self.gone and not self.transport.is_closing():
                self.transport.resume_reading()

    # --- writing (asyncio's callbacks, the senders' wait, vectored writes) -------------------
    def pause_writing(self) -> None:
        self.write_paused = True
        if self.pause_reading_with_writing:
            self.pause_reading(PAUSE_WRITE)
        self.stall_guard().watch()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.pause_reading_with_writing:
            self.resume_reading(PAUSE_WRITE)
        self._wake_drain()
        if self._stall is not None:
            self._stall.resumed()

    async def drain(self) -> None:
        """Wait until the write buffer is below its high-water mark.

        Raises :class:`ClientDisconnected` when the peer is gone, before or while waiting.
        Several senders may wait at once; one of them being cancelled releases no other.
        """
        while self.write_paused:
            waiter = self._drain_waiter
            if waiter is None:
                waiter = self._drain_waiter = self._loop.create_future()
            await asyncio.shield(waiter)
        if self.gone:
            raise ClientDisconnected("connection closed by the peer")

    def _wake_drain(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def write_parts(self, parts: Iterable[bytes]) -> None:
        """Write several buffers without joining them (one vectored send on uvloop)."""
        transport = self.transport
        if _vectored(type(transport)):
            transport.writelines(parts)
        else:
            for part in parts:
                transport.write(part)

    def write_batch(self, parts: list[bytes]) -> None:
        """Write many small buffers as one: vectored on uvloop, joined on asyncio."""
        transport = self.transport
        if _vectored(type(transport)):
            transport.writelines(parts)
        else:
            transport.write(b"".join(parts))

    # --- the stall guard, closing, aborting --------------------------------------------------
    def stall_guard(self) -> StallGuard:
        """The connection's slow-read guard, made on first need."""
        guard = self._stall
        if guard is None:
            guard = self._stall = StallGuard(
                self._loop, self.transport, self._timeout_send, self.client_text
            )
        return guard

    def close_transport(self) -> None:
        """Close after the queued bytes; a client that never reads them is cut off later."""
        transport = self.transport
        transport.close()
        if transport.get_write_buffer_size():
            self.stall_guard().watch()

    def abort(self) -> None:
        """Drop the connection at once with a reset (a no-op once it is gone)."""
        if not self.gone:
            reset(self.transport)

    def release_transport(self) -> None:
        """Another protocol takes the transport over: stop watching it, resume reading."""
        if self._stall is not None:
            self._stall.stop()
        self.resume_reading(self.read_paused)

    def transport_lost(self) -> None:
        """The connection is gone: wake every waiter; from now on :meth:`drain` raises."""
        self.gone = True
        self.write_paused = False
        self._wake_drain()
        if self._stall is not None:
            self._stall.stop()
