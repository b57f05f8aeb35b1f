"""The app's inbox of one WebSocket connection: what ``receive()`` reads.

Messages queue up to ``--ws-max-queue``, then reading pauses until the app takes one (a
chunk already read from the socket is still parsed, so the queue can briefly exceed the
limit by what one read holds, 256 KiB at most). The pausing itself is the connection's
(:class:`~corral.worker.transport.TransportBase`), shared with HTTP.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

from corral.worker.transport.base import PAUSE_QUEUE, TransportBase


class Inbox:
    """Messages for the app, in order, ending with one ``websocket.disconnect``."""

    __slots__ = ("_conn", "_loop", "_max", "_queue", "_waiter", "final")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, conn: TransportBase, max_queue: int
    ) -> None:
        self._loop = loop
        #: Paused and resumed by the queue's length; dropped with the disconnect, so a closed
        #: connection and its inbox hold no cycle and are freed by reference counting.
        self._conn: TransportBase | None = conn
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
        conn = self._conn
        if conn is not None and len(queue) >= self._max:
            conn.pause_reading(PAUSE_QUEUE)

    def finish(self, code: int, reason: str) -> None:
        """Queue the disconnect; only the first call counts."""
        if self.final is not None:
            return
        self.final = final = {"type": "websocket.disconnect", "code": int(code), "reason": reason}
        self._queue.append(final)
        self._wake()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.resume_reading(PAUSE_QUEUE)

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
        conn = self._conn
        if conn is not None and len(queue) < self._max:
            conn.resume_reading(PAUSE_QUEUE)
        return message
