"""Flow control of one WebSocket connection: the app's inbox and the transport's gates.

- :class:`Inbox` is what ``receive()`` reads: messages queue up to ``--ws-max-queue``, then
  reading pauses until the app takes one (a chunk already read from the socket is still
  parsed, so the queue can briefly exceed the limit by what one read holds, 256 KiB at most);
- :class:`Flow` pauses reading while any reason holds, and makes ``send()`` wait while the
  transport is over its high-water mark, failing at once when the peer is gone.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

#: Reasons reading is paused; it resumes only when none is left.
PAUSE_QUEUE = 1  # the app has --ws-max-queue messages it has not received yet
PAUSE_WRITE = 2  # the transport is over its write high-water mark (pongs must not pile up)
PAUSE_HANDSHAKE = 4  # bytes sent before the app accepted passed their buffer limit


class Flow:
    """Read pausing by reason, and the write-side wait of ``send()``."""

    __slots__ = ("_loop", "_paused", "_transport", "_waiter", "lost", "write_paused")

    def __init__(self, loop: asyncio.AbstractEventLoop, transport: asyncio.Transport) -> None:
        self._loop = loop
        self._transport = transport
        self._paused = 0
        self._waiter: asyncio.Future[None] | None = None
        self.write_paused = False
        self.lost = False

    @property
    def reading_paused(self) -> bool:
        return bool(self._paused)

    def pause_reading(self, reason: int) -> None:
        if not self._paused and not self.lost:
            self._transport.pause_reading()
        self._paused |= reason

    def resume_reading(self, reason: int) -> None:
        if self._paused & reason:
            self._paused &= ~reason
            if not self._paused and not self.lost and not self._transport.is_closing():
                self._transport.resume_reading()

    def pause_writing(self) -> None:
        self.write_paused = True
        self.pause_reading(PAUSE_WRITE)

    def resume_writing(self) -> None:
        self.write_paused = False
        self.resume_reading(PAUSE_WRITE)
        self.wake_writers()

    def connection_lost(self) -> None:
        self.lost = True
        self.wake_writers()

    async def writable(self) -> None:
        """Return once the transport takes writes again, or the connection is gone."""
        while self.write_paused and not self.lost:
            waiter = self._waiter
            if waiter is None or waiter.done():
                waiter = self._waiter = self._loop.create_future()
            await waiter

    def wake_writers(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)


class Inbox:
    """Messages for the app, in order, ending with one ``websocket.disconnect``."""

    __slots__ = ("_flow", "_loop", "_max", "_queue", "_waiter", "final")

    def __init__(self, loop: asyncio.AbstractEventLoop, flow: Flow, max_queue: int) -> None:
        self._loop = loop
        self._flow = flow
        self._max = max_queue
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        #: The websocket.disconnect, once queued; returned again to any later receive().
        self.final: dict[str, Any] | None = None
        #: Set when the server is stopping: a cancelled receive() returns the disconnect.

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, message: dict[str, Any]) -> None:
        """Queue a received message; reading pauses once the app is max_queue behind."""
        if self.final is not None:
            return  # nothing follows the disconnect
        queue = self._queue
        queue.append(message)
        self._wake()
        if len(queue) >= self._max:
            self._flow.pause_reading(PAUSE_QUEUE)

    def finish(self, code: int, reason: str) -> None:
        """Queue the disconnect; only the first call counts."""
        if self.final is not None:
            return
        self.final = final = {"type": "websocket.disconnect", "code": int(code), "reason": reason}
        self._queue.append(final)
        self._wake()
        self._flow.resume_reading(PAUSE_QUEUE)
        self._flow.wake_writers()

    def clear(self) -> None:
        self._queue.clear()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def get(self) -> dict[str, Any]:
        """ASGI ``receive()``: the next message, waiting for one if need be."""
        queue = self._queue
        while not queue:
            if self.final is not None:
                return self.final
            waiter = self._waiter
            if waiter is None or waiter.done():
                waiter = self._waiter = self._loop.create_future()
            await waiter
        message = queue.popleft()
        if len(queue) < self._max:
            self._flow.resume_reading(PAUSE_QUEUE)
        return message
