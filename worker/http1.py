"""The HTTP/1.1 connection protocol: one instance per connection, both parsers.

It owns the connection's state (:class:`ConnState`), its one timer (fresh-connection and
request-head timeout, body stall timeout, keep-alive idle timeout), the pipeline of parsed
requests answered strictly in order, and the hand-off of WebSocket upgrades. Everything that
happens inside one request lives in :class:`~corral.worker.cycle.RequestCycle`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from corral.tls import tls_extension
from corral.worker.asgi import HTTP_SPEC_VERSION
from corral.worker.builtin_apps import HealthCheck, overloaded_app
from corral.worker.connstate import ConnState, InvalidTransition, check_transition
from corral.worker.cycle import RequestCycle
from corral.worker.flow import PAUSE_BODY, PAUSE_PIPELINE, FlowControl
from corral.worker.parsers import ParseError, ParserLimits, RequestHead, make_parser
from corral.worker.proxy_headers import apply_to_scope
from corral.worker.writer import simple_response

if TYPE_CHECKING:
    from corral.worker.asgi import ASGIApp
    from corral.worker.edge import Proxied
    from corral.worker.parsers import RequestParser
    from corral.worker.state import ServerState, ShutdownReason

logger = logging.getLogger("corral.error")


_ASGI = {"version": "3.0", "spec_version": HTTP_SPEC_VERSION}
#: How long a connection accepted but still silent when the drain starts may take to send
#: its first request: bytes already on the way arrive within a round trip, and a second
#: bounds the drain for clients (browser preconnects) that would send nothing at all.
DRAIN_GRACE = 1.0
#: How long a connection closed on an error keeps draining the client's input (see
#: close_connection): long enough for the answer to be read, short enough to bound the cost.
LINGER = 2.0
# Hot-path aliases: identity checks against these avoid Enum attribute and hash lookups.
_IDLE, _HEAD, _BODY = ConnState.IDLE, ConnState.HEAD, ConnState.BODY


class HTTP1Protocol(asyncio.Protocol):
    """One HTTP/1.1 connection."""

    # Slots: an idle keep-alive connection costs a few hundred bytes less without a __dict__.
    __slots__ = (
        "_active",
        "_body_timeout",
        "_draining",
        "_head_timeout",
        "_health",
        "_keep_alive_timeout",
        "_last_body",
        "_limits",
        "_loop",
        "_parser_kind",
        "_parsing",
        "_pending_error",
        "_proxied",
        "_queue",
        "_request_keep_alive",
        "_requests",
        "_root_path",
        "_root_path_raw",
        "_st",
        "_timer",
        "_tls",
        "_trusted",
        "_upgrade_head",
        "_ws",
        "client",
        "flow",
        "parser",
        "scheme",
        "server",
        "state",
        "transport",
    )

    def __init__(
        self,
        state: ServerState,
        parser_kind: str,
        limits: ParserLimits,
        loop: Any = None,
        proxied: Proxied | None = None,
    ) -> None:
        config = state.config
        self.state = state
        self._proxied = proxied  # the client a PROXY protocol header named
        self._trusted = state.trusted_proxies
        self._tls: dict[str, Any] | None = None
        self._loop: asyncio.AbstractEventLoop = loop or asyncio.get_running_loop()
        self._parser_kind = parser_kind
        self._limits = limits
        self._root_path = config.root_path
        self._root_path_raw = config.root_path.encode("utf-8")
        self._health = config.health_path.encode("utf-8") if config.health_path else None
        self._ws = config.ws_enabled
        self._keep_alive_timeout = config.timeout_keep_alive
        self._head_timeout = config.timeout_request_header
        self._body_timeout = config.timeout_request_body
        self._st = ConnState.IDLE
        self._timer: asyncio.TimerHandle | None = None
        self._last_body = 0.0
        self._requests = 0
        self._active: RequestCycle | None = None  # the cycle whose response is in progress
        self._parsing: RequestCycle | None = None  # the cycle receiving body bytes
        # Pipelined requests waiting their turn; a list (an empty deque costs ~600 bytes
        # per connection, and pipelines are short).
        self._queue: list[tuple[RequestCycle, ASGIApp]] = []
        self._request_keep_alive = True
        self._pending_error: tuple[int, str] | None = None
        self._upgrade_head: RequestHead | None = None
        self._draining = False
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int | None] | None = None
        self.scheme = "http"

    @property
    def client_text(self) -> str:
        """``host:port`` of the client for log lines (built only when something logs)."""
        client = self.client
        return f"{client[0]}:{client[1]}" if client else ""

    # --- state ------------------------------------------------------------------------
    def _to(self, new: ConnState) -> None:
        self._st = check_transition(self._st, new)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # --- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.flow = FlowControl(transport)
        self.parser: RequestParser = make_parser(self._parser_kind, self, self._limits)
        peer = transport.get_extra_info("peername")
        if type(peer) is tuple:  # (host, port), or (host, port, flow, scope) for IPv6
            self.client = peer[:2]
        if self._proxied is not None:
            self.client = self._proxied.client
        sock = transport.get_extra_info("sockname")
        if type(sock) is tuple:
            self.server = sock[:2]
        elif isinstance(sock, str) and sock:
            self.server = (sock, None)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.scheme = "https"
            self._tls = tls_extension(ssl_object)
        self.state.connections.add(self)
        # A fresh connection must deliver its first request head within the head timeout.
        self._timer = self._loop.call_later(self._head_timeout, self._on_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._st = ConnState.CLOSED
        self._cancel_timer()
        self.flow.connection_lost()
        for cycle in (self._active, self._parsing):
            if cycle is not None:
                cycle.on_disconnect()
        for cycle, _ in self._queue:
            cycle.on_disconnect()
        self._queue.clear()
        self._active = self._parsing = None
        self.state.connections.discard(self)
        self.state.notify_change()

    def eof_received(self) -> bool | None:
        return None  # a half-closed client is treated as gone (the transport closes)

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        self.flow.resume_writing()

    def data_received(self, data: bytes) -> None:
        st = self._st
        if st is _IDLE:
            self._st = _HEAD  # IDLE -> HEAD: the first bytes of a request head
            timer = self._timer
            if timer is not None and (self._requests or self._draining):
                timer.cancel()  # the keep-alive (or drain grace) clock: a head has begun
                self._timer = None
        elif st is _BODY:
            if self._timer is not None:
                self._last_body = self._loop.time()
        elif st is not _HEAD and st is not ConnState.UPGRADED:
            return  # FINISHED or CLOSED: bytes after the last request are never parsed
        try:
            self.parser.feed(data)
        except ParseError as exc:
            self._on_parse_error(exc)
            return
        st = self._st
        if self._timer is None:
            if st is _HEAD:
                self._timer = self._loop.call_later(self._head_timeout, self._on_timeout)
            elif st is _BODY:
                self._last_body = self._loop.time()
                self._timer = self._loop.call_later(self._body_timeout, self._on_timeout)
        if st is ConnState.UPGRADED:
            self._try_handoff()

    # --- parser sink --------------------------------------------------------------------
    def on_head(self, head: RequestHead) -> bool:
        timer = self._timer
        if timer is not None:
            timer.cancel()
            self._timer = None
        st = self._st
        if st is not _HEAD and st is not _IDLE:
            raise InvalidTransition(f"HTTP connection: request head while {st.value}")
        if self._draining and self._active is not None:
            self._to(ConnState.FINISHED)  # draining: pipelined requests are not taken
            return True
        self._requests += 1
        state = self.state
        # While stopping (--timeout-shutdown-delay), every response says Connection: close.
        draining = state.draining or self._draining
        keep_alive = self._request_keep_alive = head.keep_alive and not draining
        limit = state.limit_concurrency
        over_limit = limit is not None and state.over_limit()
        upgrade = head.upgrade
        if upgrade is not None and upgrade == b"websocket" and self._ws:
            if not (over_limit or draining):
                self._upgrade_head = head
                self._to(ConnState.UPGRADED)
                return True
            over_limit = True  # a WebSocket opened now would only be cut at the deadline: 503
        http10 = head.http_version == "1.0"
        cycle = RequestCycle(
            self,
            self._scope(head),
            keep_alive,
            head.expect_continue and not http10,
            http10,
            head.method == "HEAD",
        )
        self._parsing = cycle
        self._st = _BODY
        if self._health is not None and head.raw_path == self._health:
            app: ASGIApp = HealthCheck(state)  # not counted: probes must not recycle workers
        else:
            state.total_requests += 1
            app = overloaded_app if over_limit else state.app  # type: ignore[assignment]
        if self._active is None:
            self._active = cycle
            task = self._loop.create_task(cycle.run_asgi(app))
            state.tasks.add(task)
            task.add_done_callback(state.task_done)
        else:
            self._queue.append((cycle, app))
            self.flow.pause_reading(PAUSE_PIPELINE)
        return False

    def on_body(self, data: bytes) -> None:
        cycle = self._parsing
        if cycle is not None:
            cycle.on_body(data)

    def on_message_complete(self) -> None:
        cycle = self._parsing
        self._parsing = None
        timer = self._timer
        if timer is not None:
            timer.cancel()
            self._timer = None
        if cycle is not None:
            cycle.on_body_complete()
        if self._st is not _BODY:
            raise InvalidTransition(f"HTTP connection: message end while {self._st.value}")
        if not self._request_keep_alive or self._draining:
            self._st = ConnState.FINISHED
            if self._active is None:
                self.close_connection()
            return
        self._st = _IDLE
        if self._active is None:
            self._idle()

    # --- scope ----------------------------------------------------------------------------
    def _scope(self, head: RequestHead) -> dict[str, Any]:
        raw_path = head.raw_path
        path = raw_path.decode("latin-1")
        if b"%" in raw_path:
            path = unquote(path)  # percent-decoded as UTF-8 (the target is ASCII)
        root = self._root_path
        if root:
            path = root + path
            raw_path = self._root_path_raw + raw_path
        scope = {
            "type": "http",
            "asgi": _ASGI.copy(),
            "http_version": head.http_version,
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "method": head.method,
            "root_path": root,
            "path": path,
            "raw_path": raw_path,
            "query_string": head.query_string,
            "headers": head.headers,
            "state": self.state.lifespan_state.copy(),
            "extensions": {} if self._tls is None else {"tls": self._tls},
        }
        if self._trusted is not None:
            apply_to_scope(scope, self._trusted)
        return scope

    # --- the pipeline -----------------------------------------------------------------------
    def _start(self, cycle: RequestCycle, app: ASGIApp) -> None:
        self._active = cycle
        state = self.state
        task = self._loop.create_task(cycle.run_asgi(app))
        state.tasks.add(task)
        task.add_done_callback(state.task_done)

    def response_complete(self, cycle: RequestCycle) -> None:
        """Called by the active cycle once its response is fully written."""
        if cycle is not self._active:
            return
        self._active = None
        if self._st is ConnState.CLOSED:
            return
        if not cycle.keep_alive or self._draining:
            self.close_connection(linger=self._parsing is not None)
            return
        if self._parsing is cycle and cycle.expect_continue:
            # Answered before its body, and 100 never sent: the body may or may not come.
            self.close_connection(linger=True)
            return
        flow = self.flow
        if flow.read_paused & PAUSE_BODY:  # body the app never read: the rest is dropped
            flow.resume_reading(PAUSE_BODY)
        queue = self._queue
        if queue:
            next_cycle, app = queue.pop(0)
            if not queue:
                self.flow.resume_reading(PAUSE_PIPELINE)
            self._start(next_cycle, app)
            return
        st = self._st
        if self._pending_error is not None:
            self._send_error(*self._pending_error)
        elif st is ConnState.UPGRADED:
            self._try_handoff()
        elif st is ConnState.FINISHED:
            self.close_connection()
        elif st is ConnState.IDLE:
            self._idle()

    def _idle(self) -> None:
        """Nothing in flight and no byte of a next request: the keep-alive clock runs."""
        self._cancel_timer()
        self._timer = self._loop.call_later(self._keep_alive_timeout, self._on_timeout)

    # --- timeouts -----------------------------------------------------------------------------
    def _on_timeout(self) -> None:
        self._timer = None
        st = self._st
        if st is ConnState.IDLE:
            if self._active is None and not self._queue:
                self.close_connection()  # keep-alive expired, or a silent fresh connection
        elif st is ConnState.HEAD:
            logger.info(
                "Request head from %s not complete within %ss; sent 408",
                self.client_text or "client",
                self._head_timeout,
            )
            self._fail_reading(408, "request head timeout")
        elif st is ConnState.BODY:
            wait = self._last_body + self._body_timeout - self._loop.time()
            if self.flow.read_paused:
                wait = self._body_timeout  # corral paused reading; not the client's stall
            if wait > 0:
                self._timer = self._loop.call_later(wait, self._on_timeout)
                return
            logger.info(
                "Request body from %s stalled for %ss; closing",
                self.client_text or "client",
                self._body_timeout,
            )
            self._fail_reading(408, "request body timeout")

    def _fail_reading(self, status: int, reason: str) -> None:
        """The request being read can't be completed: answer ``status`` if we still may."""
        cycle = self._parsing
        self._parsing = None
        self._to(ConnState.FINISHED)
        self._cancel_timer()
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
        logger.warning(
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

    # --- closing, draining, hand-off ------------------------------------------------------------
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
        self._cancel_timer()
        for cycle in (self._active, self._parsing):
            if cycle is not None:
                cycle.on_disconnect()
        transport = self.transport
        if linger and not transport.is_closing() and transport.can_write_eof():
            transport.write_eof()
            self.flow.resume_reading(PAUSE_BODY | PAUSE_PIPELINE)
            self._timer = self._loop.call_later(LINGER, transport.close)
        else:
            transport.close()

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
                self._cancel_timer()
                limit = self._keep_alive_timeout if st is ConnState.IDLE else self._head_timeout
                grace = min(limit, DRAIN_GRACE) if self._requests else DRAIN_GRACE
                self._timer = self._loop.call_later(grace, self._on_timeout)
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
        self.transport.close()  # also ends a lingering close at once

    def _try_handoff(self) -> None:
        """Give the connection to the WebSocket protocol once earlier responses are out."""
        head = self._upgrade_head
        if head is None or self._st is not ConnState.UPGRADED:
            return
        if self._active is not None or self._queue:
            self.flow.pause_reading(PAUSE_PIPELINE)
            return
        self._upgrade_head = None
        self._cancel_timer()
        self.flow.resume_reading(PAUSE_PIPELINE | PAUSE_BODY)
        self.state.connections.discard(self)
        from corral.worker.websocket import upgrade

        upgrade(self.state, self.transport, self._scope(head), self.parser.unconsumed())
