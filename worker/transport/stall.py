"""Slow-read protection: abort a connection whose client stopped reading.

Once the kernel's send buffer is full, what corral writes waits in the transport's buffer.
A client that stops reading would pin that buffer, and the connection with it, forever:
closing a transport waits for its buffer to drain, and a paused ``send()`` waits for the
same. :class:`StallGuard` watches while the buffer is over its high-water mark and after
the connection was closed with bytes still queued; when no byte has left the buffer for
``--timeout-send`` seconds, it aborts the connection (nginx's ``send_timeout``).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import socket
import struct

from corral.worker.clientlog import Kind, client_log

#: SO_LINGER on, zero seconds: closing resets the connection and drops the unsent bytes,
#: instead of leaving the kernel an orphan socket that keeps trying to deliver them.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)


def reset(transport: asyncio.WriteTransport) -> None:
    """Abort with a TCP reset (SO_LINGER 0), so the kernel drops what is still unsent."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
        except OSError:
            pass  # already gone: abort() below is all there is to do
    transport.abort()


class Progress(enum.Enum):
    """What the write buffer did since the last look."""

    DRAINED = "drained"  # empty: nothing left to watch
    MOVING = "moving"  # smaller: the client is reading, however slowly
    STALLED = "stalled"  # no smaller: the client read nothing


def progress(before: int, now: int) -> Progress:
    """Compare two sizes of the write buffer (pure, for the guard and its tests)."""
    if now == 0:
        return Progress.DRAINED
    return Progress.MOVING if now < before else Progress.STALLED


class StallGuard:
    """Checks every ``timeout`` seconds while watching; aborts on a stalled buffer."""

    __slots__ = ("_client", "_handle", "_loop", "_seen", "_timeout", "_transport")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        transport: asyncio.WriteTransport,
        timeout: float,
        client: str,
    ) -> None:
        self._loop = loop
        self._transport = transport
        self._timeout = timeout
        self._client = client
        self._handle: asyncio.TimerHandle | None = None
        self._seen = 0

    def watch(self) -> None:
        """Start watching, unless already watching or the timeout is 0 (disabled)."""
        if self._handle is None and self._timeout > 0:
            self._seen = self._transport.get_write_buffer_size()
            self._handle = self._loop.call_later(self._timeout, self._check)

    def resumed(self) -> None:
        """The buffer fell under its low-water mark: stop watching, unless the transport is
        closing (a closing connection is watched until its buffer is empty)."""
        if not self._transport.is_closing():
            self.stop()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        self._handle = None
        now = self._transport.get_write_buffer_size()
        verdict = progress(self._seen, now)
        if verdict is Progress.MOVING:
            self._seen = now
            self._handle = self._loop.call_later(self._timeout, self._check)
        elif verdict is Progress.STALLED:
            client_log(
                Kind.SEND_STALL,
                logging.INFO,
                "Client %s read nothing for %ss with %d bytes waiting; connection aborted",
                self._client or "(unknown)",
                self._timeout,
                now,
            )
            reset(self._transport)
