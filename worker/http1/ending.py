"""The cold half of the HTTP/1.1 connection protocol: how its requests fail and how it ends.

:class:`~corral.worker.http1.protocol.HTTP1Protocol` keeps the per-request hot path (bytes in,
parser callbacks, scope, pipeline). What runs rarely lives in its base class here: the timeouts, the
error answers for requests that can't be read, closing (with linger), the drain and shutdown
of :class:`~corral.worker.state.ConnectionProtocol`, and the hand-off to the WebSocket
protocol. The base declares the attributes it reads; the subclass owns them in its slots.

Deadlines are numbers: :attr:`ConnectionEnding.deadline` is the next one (head, body,
keep-alive, drain grace or linger, by state), and the process's
:class:`~corral.worker.deadlines.DeadlineSweep` calls :meth:`ConnectionEnding.on_deadline`
once it has passed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from corral.worker.clientlog import Kind, client_log
from corral.worker.http1.connstate import ConnState, check_transition
from corral.worker.http1.writer import simple_response
from corral.worker.transport.base import PAUSE_BODY, PAUSE_PIPELINE, TransportBase

if TYPE_CHECKING:
    from corral.worker.asgi.cycle import RequestCycle
    from corral.worker.asgi.types import ASGIApp
    from corral.worker.deadlines import DeadlineSweep
    from corral.worker.http1.parsers import ParseError, RequestHead, RequestReader
    from corral.worker.state import ServerState, ShutdownReason


#: How long a connection accepted but still silent when the drain starts may take to send
#: its first request: bytes already on the way arrive within a round trip, and a second
#: bounds the drain for clients (browser preconnects) that would send nothing at all.
DRAIN_GRACE = 1.0
#: How long a connection closed on an error keeps draining the client's input (see
#: close_connection): long enough for the answer to be read, short enough to bound the cost.
LINGER = 2.0


class ConnectionEnding(TransportBase):
    """Timeouts, failed reads, closing, drain, shutdown and WebSocket hand-off."""

    # Slots for the state both halves share; HTTP1Protocol adds the hot path's own.
    __slots__ = (
        "_active",
        "_body_timeout",
        "_draining",
        "_head_timeout",
        "_keep_alive_timeout",
        "_loop",
        "_parsing",
        "_pending_error",
        "_queue",
        "_requests",
        "_st",
        "_starting",
        "_sweep",
        "_upgrade_head",
        "client",
        "deadline",
        "parser",
        "state",
    )

    state: ServerState
    parser: RequestReader
    client: tuple[str, int] | None
    #: The next deadline in loop time (0: none); what it means depends on the state.
    deadline: float
    _sweep: DeadlineSweep
    _loop: asyncio.AbstractEventLoop
    _st: ConnState
    _requests: int
    _active: RequestCycle | None
    #: The app for ``_active`` when its first step is still to run (see HTTP1Protocol).
    _starting: ASGIApp | None
    _parsing: RequestCycle | None
    _queue: list[tuple[RequestCycle, ASGIApp]]
    _pending_error: tuple[int, str] | None
    _upgrade_head: RequestHead | None
    _draining: bool
    _keep_alive_timeout: float
    _head_timeout: float
    _body_timeout: float

    if TYPE_CHECKING:

        def _scope(self, head: RequestHead) -> dict[str, Any]: ...  # built by the subclass

    @property
    def client_text(self) -> str:
        """``host:port`` of the client for log lines (built only when something logs)."""
        client = self.client
        return f"{client[0]}:{client[1]}" if client else ""

    # --- state ------------------------------------------------------------------------
    def _to(self, new: ConnState) -> None:
        self._st = check_transition(self._st, new)

    def _deadline_in(self, seconds: float) -> None:
        self.deadline = self._loop.time() + seconds

    # --- timeouts -----------------------------------------------------------------------
    def on_deadline(self) -> None:
        """The sweep found :attr:`deadline` passed (and cleared it): act on the state."""
        st = self._st
        if st is ConnState.IDLE:
            if self._active is None and not self._queue:
                self.close_connection()  # keep-alive expired, or a silent fresh connection
        elif st is ConnState.HEAD:
            client_log(
                Kind.HEAD_TIMEOUT,
                logging.INFO,
                "Request head from %s not complete within %ss; sent 408",
                self.client_text or "client",
                self._head_timeout,
            )
            self._fail_reading(408, "request head timeout")
        elif st is ConnState.BODY:
            if self.read_paused:  # corral paused reading: not the client's stall
                self._deadline_in(self._body_timeout)
                return
            client_log(
                Kind.BODY_TIMEOUT,
                logging.INFO,
                "Request body from %s stalled for %ss; closing",
                self.client_text or "client",
                self._body_timeout,
            )
            self._fail_reading(408, "request body timeout")
        elif st is ConnState.CLOSED:
            self.close_transport()  # the linger after an error answer is over

    # --- failed reads -------------------------------------------------------------------
    def _fail_reading(self, status: int, reason: str) -> None:
        """The request being read can't be completed: answer ``status`` if we still may."""
        cycle = self._parsing
        self._parsing = None
        self._to(ConnState.FINISHED)
        self.deadline = 0.0
        if cycle is None:  # the failure is in a head: answer after earlier responses
            if self._active is None:
                self._send_error(status, reason)
            else:
                self._pending_error = (status, reason)
            return
        if cycle is self._active:
            if cycle.head_written:
                self.close_connection()
            else:
                cycle.fail(status)
            return
        if self._active is None:
            # Already answered (the app responded before its body arrived): nothing more
            # may be sent for it, so just close rather than hold the connection forever.
            self.close_connection()
            return
        # A pipelined request that never started: drop it, answer after the earlier ones.
        self._queue = [item for item in self._queue if item[0] is not cycle]
        cycle.on_disconnect()
        self._pending_error = (status, reason)

    def _on_parse_error(self, exc: ParseError) -> None:
        client_log(
            Kind.BAD_REQUEST,
            logging.WARNING,
            "Invalid HTTP request received (%s %s from %s).",  # uvicorn's words, then why
            exc.status,
            exc.reason,
            self.client_text or "a client",
        )
        self._fail_reading(exc.status, exc.reason)

    def _send_error(self, status: int, reason: str) -> None:
        self._pending_error = None
        if self._st is not ConnState.CLOSED:
            self.transport.write(simple_response(status, self.state))
            self.close_connection(linger=True)

    # --- closing, draining, hand-off ------------------------------------------------------
    def close_connection(self, linger: bool = False) -> None:
        """Close after the bytes already written; cycles see a disconnect from now on.

        ``linger`` is for a client that may still be sending (an error answer, a body cut
        short): closing a socket with unread input makes the kernel send a reset, which can
        destroy the answer before the client reads it. So corral half-closes, drops what
        still arrives, and closes when the client does or after :data:`LINGER` seconds.
        """
        if self._st is ConnState.CLOSED:
            return
        self._st = ConnState.CLOSED
        self.deadline = 0.0
        for cycle in (self._active, self._parsing):
            if cycle is not None:
                cycle.on_disconnect()
        transport = self.transport
        if linger and not transport.is_closing() and transport.can_write_eof():
            transport.write_eof()
            self.resume_reading(PAUSE_BODY | PAUSE_PIPELINE)
            self._deadline_in(LINGER)  # on_deadline closes the transport in CLOSED
        else:
            self.close_transport()

    def start_drain(self) -> None:
        self._draining = True
        st = self._st
        if st is ConnState.CLOSED:
            return
        active = self._active
        if active is None and not self._queue and self._parsing is None:
            if st is ConnState.IDLE or st is ConnState.HEAD:
                # Fresh, idle keep-alive or mid-head: the client's next request may already
                # be on the wire, and closing now would reset it (a busy client reuses its
                # connection within microseconds). It is answered with Connection: close;
                # a client that sends nothing more is closed after a short grace.
                limit = self._keep_alive_timeout if st is ConnState.IDLE else self._head_timeout
                grace = min(limit, DRAIN_GRACE) if self._requests else DRAIN_GRACE
                self._deadline_in(grace)
                return
            self.close_connection()  # nothing in flight and nothing to read
            return
        if active is not None:
            active.keep_alive = False  # its head says Connection: close if not yet sent
        for cycle, _ in self._queue:
            cycle.on_disconnect()
        self._queue.clear()
        if self._parsing is None or self._parsing is not active:
            self._parsing = None
            if st is not ConnState.FINISHED and st is not ConnState.UPGRADED:
                self._to(ConnState.FINISHED)

    def shutdown_now(self, reason: ShutdownReason) -> None:
        if self._st is not ConnState.CLOSED:
            active = self._active
            if active is not None and not active.head_written:
                active.fail(503)
            self.close_connection()
        self.close_transport()  # also ends a lingering close at once

    def _try_handoff(self) -> None:
        """Give the connection to the WebSocket protocol once earlier responses are out."""
        head = self._upgrade_head
        if head is None or self._st is not ConnState.UPGRADED:
            return
        if self._active is not None or self._queue:
            self.pause_reading(PAUSE_PIPELINE)
            return
        self._upgrade_head = None
        self.deadline = 0.0
        self._sweep.forget(self)
        self.release_transport()  # the WebSocket protocol takes over the transport
        self.state.connections.discard(self)
        from corral.worker.websocket.connection import upgrade

        unconsumed = self.parser.unconsumed()
        del self.parser  # the reference cycle (see HTTP1Protocol.connection_lost)
        upgrade(self.state, self.transport, self._scope(head), unconsumed)
