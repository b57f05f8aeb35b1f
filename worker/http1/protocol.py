"""The HTTP/1.1 connection protocol: one instance per connection, both parsers.

It owns the connection's state (:class:`ConnState`), its one timer (fresh-connection and
request-head timeout, body stall timeout, keep-alive idle timeout), the pipeline of parsed
requests answered strictly in order, and the hand-off of WebSocket upgrades. This module is
the per-request hot path; the timeouts, failed reads, closing, drain, shutdown and hand-off
live in its base class, :class:`~corral.worker.http1.ending.ConnectionEnding`. Everything
that happens inside one request lives in :class:`~corral.worker.asgi.cycle.RequestCycle`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from corral.tls import tls_extension
from corral.worker.asgi.builtin_apps import HealthCheck, overloaded_app
from corral.worker.asgi.cycle import RequestCycle
from corral.worker.asgi.pathsend import EXTENSION as PATHSEND
from corral.worker.asgi.types import HTTP_SPEC_VERSION
from corral.worker.edge.proxy_headers import apply_to_scope
from corral.worker.http1.connstate import ConnState, InvalidTransition
from corral.worker.http1.ending import DRAIN_GRACE, LINGER, ConnectionEnding
from corral.worker.http1.parsers import ParseError, ParserLimits, RequestHead, RequestReader
from corral.worker.transport.flow import PAUSE_BODY, PAUSE_PIPELINE, FlowControl

if TYPE_CHECKING:
    from corral.worker.asgi.types import ASGIApp
    from corral.worker.edge.accept import Proxied
    from corral.worker.state import ServerState
    from corral.worker.transport.stall import StallGuard

__all__ = ["DRAIN_GRACE", "LINGER", "ConnState", "HTTP1Protocol"]

_ASGI = {"version": "3.0", "spec_version": HTTP_SPEC_VERSION}
# Hot-path aliases: identity checks against these avoid Enum attribute and hash lookups.
_IDLE, _HEAD, _BODY = ConnState.IDLE, ConnState.HEAD, ConnState.BODY


class HTTP1Protocol(ConnectionEnding):
    """One HTTP/1.1 connection (its cold half is the base class, in http1_ending)."""

    # Slots (the state shared with the cold half is slotted in the base): an idle keep-alive
    # connection costs a few hundred bytes less without a __dict__.
    __slots__ = (
        "_health",
        "_limits",
        "_proxied",
        "_request_keep_alive",
        "_root_path",
        "_root_path_raw",
        "_tls",
        "_trusted",
        "_ws",
        "scheme",
        "server",
    )

    def __init__(
        self,
        state: ServerState,
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
        self._stall: StallGuard | None = None
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

    # --- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.flow = FlowControl(transport)
        self.parser = RequestReader(self, self._limits)
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
        if self._stall is not None:
            self._stall.stop()
        self.flow.connection_lost()
        for cycle in (self._active, self._parsing):
            if cycle is not None:
                cycle.on_disconnect()
        for cycle, _ in self._queue:
            cycle.on_disconnect()
        self._queue.clear()
        self._active = self._parsing = None
        # The parser calls back into this protocol: a reference cycle, broken here so the
        # connection (under TLS with its SSL object and buffers) is freed at once instead
        # of at the next cycle collection, which under connection churn fragments the heap.
        del self.parser
        self.state.connections.discard(self)
        self.state.notify_change()

    def eof_received(self) -> bool | None:
        return None  # a half-closed client is treated as gone (the transport closes)

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
            self._start(cycle, app)
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
        scope: dict[str, Any] = {
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
            "extensions": (
                {PATHSEND: {}} if self._tls is None else {PATHSEND: {}, "tls": self._tls}
            ),
        }
        if self._trusted is not None:
            apply_to_scope(scope, self._trusted)
        return scope

    # --- the pipeline -----------------------------------------------------------------------
    def _start(self, cycle: RequestCycle, app: ASGIApp) -> None:
        self._active = cycle
        self.state.start_task(self._loop, cycle.run_asgi(app))

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
