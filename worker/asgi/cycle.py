"""One HTTP request/response cycle: the ``receive()`` and ``send()`` an app gets.

The connection protocol (:mod:`corral.worker.http1.protocol`) creates a :class:`RequestCycle`
per request head, feeds it body bytes, and runs :meth:`RequestCycle.run_asgi` (its first
step at once, see :mod:`corral.worker.asgi.eager`). The
cycle enforces ASGI message order, frames the response through
:class:`~corral.worker.http1.writer.ResponseFramer`, and turns app failures into a 500 (before the
response started) or a closed connection (after). Its log lines are built in
:mod:`corral.worker.asgi.cycle_log`.
"""

from __future__ import annotations

import asyncio
import logging
from enum import Enum
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from corral.worker.asgi import cycle_log, pathsend
from corral.worker.asgi.cycle_log import log_access  # per response: one name lookup, not two
from corral.worker.http1.writer import (
    BodyMode,
    HeadFraming,
    InvalidResponseHeader,
    ResponseFramer,
    simple_response,
)
from corral.worker.transport.base import PAUSE_BODY, READ_HIGH_WATER, ClientDisconnected

if TYPE_CHECKING:
    from collections.abc import Iterable

    from corral.worker.asgi.types import ASGIApp, Message
    from corral.worker.http1.parsers import RequestHead
    from corral.worker.state import ServerState

logger = logging.getLogger("corral.error")

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
#: Bodies up to this size are joined to the head (or chunk framing) in one buffer; bigger
#: ones go out as separate buffers (``TransportBase.write_parts``: one vectored write on
#: uvloop), so the body is never copied.
COALESCE_LIMIT = 16384
#: Streamed chunks are queued up to this many bytes before a write is forced: the transport's
#: own high-water mark (64 KiB) then still governs flow control.
CORK_LIMIT = 65536


class ResponseState(Enum):
    WAITING = "waiting"  # no http.response.start yet
    STARTED = "started"  # start received; the head waits for the first body message
    STREAMING = "streaming"  # head written, more body to come
    DISCARDING = "discarding"  # corral answered for the app; the app's body is dropped
    COMPLETE = "complete"


_WAITING, _STARTED, _STREAMING = (
    ResponseState.WAITING,
    ResponseState.STARTED,
    ResponseState.STREAMING,
)
_DISCARDING, _COMPLETE = ResponseState.DISCARDING, ResponseState.COMPLETE
_CHUNKED = BodyMode.CHUNKED


class ASGIProtocolError(RuntimeError):
    """The app sent an ASGI message that is invalid at this point."""


class RequestKind(NamedTuple):
    """What a request's head decided about its response, for :class:`RequestCycle`."""

    keep_alive: bool  # the connection may be reused after the response (so far)
    expect_continue: bool  # the client waits for 100 Continue before sending its body
    http10: bool  # an HTTP/1.0 request: no chunked response
    no_body: bool  # a HEAD request: the response has no body

    @staticmethod
    def of(head: RequestHead, keep_alive: bool) -> RequestKind:
        """The kind for ``head`` (one of 16 shared tuples: nothing is built per request)."""
        http10 = head.http_version == "1.0"
        return _KINDS[
            keep_alive * 8
            + (head.expect_continue and not http10) * 4
            + http10 * 2
            + (head.method == "HEAD")
        ]


_KINDS = [RequestKind(bool(i & 8), bool(i & 4), bool(i & 2), bool(i & 1)) for i in range(16)]


class CycleOwner(Protocol):
    """What a cycle needs from its connection (implemented by the HTTP/1.1 protocol).

    Only the transport and its flow control: nothing here is HTTP/1.1 framing, so an
    HTTP/2 stream can own a cycle as well.
    """

    transport: asyncio.Transport
    state: ServerState
    client: tuple[str, int] | None
    read_paused: int
    write_paused: bool

    @property
    def client_text(self) -> str: ...

    def pause_reading(self, reason: int) -> None: ...

    def resume_reading(self, reason: int) -> None: ...

    async def drain(self) -> None: ...

    def write_parts(self, parts: Iterable[bytes]) -> None: ...

    def write_batch(self, parts: list[bytes]) -> None: ...

    def response_complete(self, cycle: RequestCycle) -> None: ...

    def close_connection(self) -> None: ...


class RequestCycle:
    """The ASGI side of one request."""

    __slots__ = (
        "body_complete",
        "buffered",
        "chunks",
        "conn",
        "corked",
        "corked_size",
        "disconnected",
        "expect_continue",
        "framer",
        "headers",
        "http10",
        "keep_alive",
        "no_body",
        "request_done",
        "resp",
        "scope",
        "status",
        "waiter",
    )

    def __init__(self, conn: CycleOwner, scope: dict[str, Any], kind: RequestKind) -> None:
        self.conn = conn
        self.scope = scope
        self.keep_alive, self.expect_continue, self.http10, self.no_body = kind
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.body_complete = False
        self.request_done = False  # the final http.request message was handed out
        self.disconnected = False
        #: Streamed chunks written within one loop turn, sent together (see _cork).
        self.corked: list[bytes] | None = None
        self.corked_size = 0
        self.waiter: asyncio.Future[None] | None = None
        self.resp = ResponseState.WAITING
        self.status = 0
        self.headers: Any = ()
        self.framer: ResponseFramer | None = None

    # --- events from the connection ------------------------------------------------------
    def on_body(self, data: bytes) -> None:
        if self.resp is ResponseState.COMPLETE or self.disconnected:
            return  # nobody will read it; the parser still frames it
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > READ_HIGH_WATER:
            self.conn.pause_reading(PAUSE_BODY)
        self._wake()

    def on_body_complete(self) -> None:
        self.body_complete = True
        self.expect_continue = False
        self._wake()

    def on_disconnect(self) -> None:
        """The connection is gone (or corral closed it): wake the app, refuse sends."""
        self.disconnected = True
        self._wake()

    def _wake(self) -> None:
        """Wake an app waiting in receive() (for body, the end of the response, or EOF)."""
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def head_written(self) -> bool:
        return self.resp is not ResponseState.WAITING and self.resp is not ResponseState.STARTED

    # --- receive() -------------------------------------------------------------------------
    async def receive(self) -> Message:
        if self.expect_continue:
            self.expect_continue = False
            resp = self.resp
            if not self.disconnected and (resp is _WAITING or resp is _STARTED):
                self.conn.transport.write(CONTINUE)  # the final head is not out yet
        while True:
            if self.resp is ResponseState.COMPLETE:
                return {"type": "http.disconnect"}
            chunks = self.chunks
            if chunks:
                body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self.buffered = 0
                conn = self.conn
                if conn.read_paused & PAUSE_BODY:
                    conn.resume_reading(PAUSE_BODY)
                more = not self.body_complete
                self.request_done = not more
                return {"type": "http.request", "body": body, "more_body": more}
            if self.body_complete and not self.request_done:
                self.request_done = True
                return {"type": "http.request", "body": b"", "more_body": False}
            if self.disconnected:
                return {"type": "http.disconnect"}
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None

    # --- send() ----------------------------------------------------------------------------
    async def send(self, message: Message) -> None:
        if self.disconnected:
            raise ClientDisconnected("the client has disconnected")
        kind = message["type"]
        resp = self.resp
        if kind == "http.response.body":
            if resp is _STREAMING:
                framer = self.framer
                if framer is not None and framer.mode is _CHUNKED and message.get("more_body"):
                    # The streaming hot path, framed inline (ResponseFramer.frame does the
                    # same; every other case goes through it).
                    body = message.get("body", b"")
                    size = len(body)
                    if size:
                        self._cork(b"%x\r\n" % size, body, size)
                else:
                    self._more_body(message)
            elif resp is _STARTED:
                self._first_body(message)
            elif resp is _DISCARDING:
                if not message.get("more_body", False):
                    self.resp = _COMPLETE
                return
            else:
                raise self._out_of_order(kind)
            # Wait for room only when the transport's buffer is over its high-water mark.
            if self.resp is _STREAMING and self.conn.write_paused:
                await self.conn.drain()
        elif kind == "http.response.start":
            if resp is not _WAITING:
                raise self._out_of_order(kind)
            self.status = message["status"]
            self.headers = message.get("headers", ())
            self.resp = _STARTED
        elif kind == "http.response.pathsend":
            if resp is _STARTED:
                await pathsend.send_path(self, message)
            elif resp is _DISCARDING:
                self.resp = _COMPLETE
            else:
                raise self._out_of_order(kind)
        else:
            raise self._out_of_order(kind)

    def _out_of_order(self, kind: object) -> ASGIProtocolError:
        self.keep_alive = False  # whatever goes out now, the connection won't be reused
        expected = {
            ResponseState.WAITING: "'http.response.start'",
            ResponseState.STARTED: "'http.response.body' or 'http.response.pathsend'",
            ResponseState.STREAMING: "'http.response.body'",
        }.get(self.resp, "nothing (the response is complete)")
        return ASGIProtocolError(f"Expected ASGI message {expected}, but got {kind!r}.")

    def _first_body(self, message: Message) -> None:
        body = message.get("body", b"")
        more = message.get("more_body", False)
        conn = self.conn
        framer = ResponseFramer()
        try:
            head = framer.head(
                self.status,
                self.headers,
                conn.state,
                # 100 never sent: the client may or may not send the body, so close after.
                HeadFraming.of(
                    self.no_body, self.http10, self.keep_alive and not self.expect_continue
                ),
                None if more else len(body),
            )
        except InvalidResponseHeader as exc:  # the app's status or headers, nothing else
            cycle_log.refused_response(self.scope, exc)
            self.resp = ResponseState.DISCARDING if more else ResponseState.COMPLETE
            self._answer(500)
            return
        self.framer = framer
        self.keep_alive = framer.keep_alive
        if conn.state.access_log:
            log_access(self.scope, conn, self.status)
        data = framer.frame(body, more)
        if data:
            if len(data) <= COALESCE_LIMIT:
                conn.transport.write(head + data)
            else:
                conn.write_parts((head, data))
        else:
            conn.transport.write(head)
        if framer.dropped:
            cycle_log.dropped_body(self.scope, self.status)
        if framer.overflow:
            self._overflow()
        if more:
            self.resp = _STREAMING
        else:
            self._finish()

    def _cork(self, prefix: bytes, body: bytes, size: int) -> None:
        """Queue one chunk; the chunks an app streams within one loop turn go out together.

        An app that streams without awaiting anything else sends many chunks per loop turn;
        one (vectored) write for all of them saves a syscall per chunk. The queue is sent at
        the end of the turn, when it reaches CORK_LIMIT, or before any other write.
        """
        corked = self.corked
        if corked is None:  # the first chunk of this loop turn: send the queue at its end
            corked = self.corked = []
            asyncio.get_running_loop().call_soon(self._uncork_at_turn_end)
        corked += (prefix, body, b"\r\n")
        self.corked_size += size
        if self.corked_size >= CORK_LIMIT:
            self.uncork()

    def _uncork_at_turn_end(self) -> None:
        self.uncork()
        self.corked = None  # the next chunk starts a new queue (and schedules its send)

    def uncork(self) -> None:
        """Write the queued chunks now (a no-op when nothing is queued)."""
        corked = self.corked
        if corked:
            self.corked = []  # still scheduled: the turn-end callback is due
            self.corked_size = 0
            if not self.disconnected:
                self.conn.write_batch(corked)

    def _more_body(self, message: Message) -> None:
        framer = self.framer
        if framer is None:  # pragma: no cover - set together with STREAMING
            raise ASGIProtocolError("response body without a head")
        if self.corked:
            self.uncork()
        more = message.get("more_body", False)
        overflow = framer.overflow
        data = framer.frame(message.get("body", b""), more)
        if data:
            self.conn.transport.write(data)
        if framer.dropped:
            cycle_log.dropped_body(self.scope, self.status)
        if framer.overflow and not overflow:
            self._overflow()
        if not more:
            self._finish()

    def _overflow(self) -> None:
        cycle_log.body_overflow(self.scope)
        self.keep_alive = False

    def _finish(self) -> None:
        self.resp = _COMPLETE
        framer = self.framer
        if framer is not None:  # short and overflow are only ever set for LENGTH bodies
            if framer.short:
                cycle_log.body_short(self.scope, framer.remaining)
                self.keep_alive = False
            elif framer.overflow or framer.mode is BodyMode.CLOSE:
                self.keep_alive = False
        self._wake()
        self.conn.response_complete(self)

    def _answer(self, status: int) -> None:
        """Send corral's own response in place of the app's (the head was not written)."""
        conn = self.conn
        if self.expect_continue:
            self.keep_alive = False  # the client may still send the body it announced
        if conn.state.access_log:
            log_access(self.scope, conn, status)
        conn.transport.write(simple_response(status, conn.state, close=not self.keep_alive))
        if self.resp is not ResponseState.DISCARDING:
            self.resp = ResponseState.COMPLETE
        self._wake()
        conn.response_complete(self)

    def fail(self, status: int) -> None:
        """Answer ``status`` and close (timeouts, shutdown) if nothing was written yet."""
        if self.disconnected or self.head_written:
            return
        self.keep_alive = False
        self.resp = ResponseState.DISCARDING
        self._answer(status)
        self.on_disconnect()

    # --- running the app ---------------------------------------------------------------------
    async def run_asgi(self, app: ASGIApp) -> None:
        try:
            await app(self.scope, self.receive, self.send)
        except asyncio.CancelledError:
            if not self.disconnected and self.resp is not ResponseState.COMPLETE:
                self.conn.close_connection()
            raise
        except BaseException as exc:  # nothing an app does may take the server down
            self._app_failed(exc)
        else:
            resp = self.resp
            if resp is ResponseState.COMPLETE or resp is ResponseState.DISCARDING:
                return
            if self.disconnected:
                return
            if resp is ResponseState.WAITING:
                logger.error("ASGI callable returned without starting response.")
                self._answer(500)
            elif resp is ResponseState.STARTED:
                logger.error("ASGI callable returned without completing response.")
                self._answer(500)
            else:
                logger.error("ASGI callable returned without completing response.")
                self.conn.close_connection()

    def _app_failed(self, exc: BaseException) -> None:
        if isinstance(exc, ClientDisconnected):
            logger.debug("Client disconnected during %s", cycle_log.request_target(self.scope))
            return
        logger.error("Exception in ASGI application\n", exc_info=exc)
        if self.disconnected:
            return
        resp = self.resp
        if resp is ResponseState.WAITING or resp is ResponseState.STARTED:
            self._answer(500)
        elif resp is ResponseState.STREAMING:
            self.conn.close_connection()
