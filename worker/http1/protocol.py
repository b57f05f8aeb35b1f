"""The HTTP/1.1 connection protocol: one instance per connection.

It owns the connection's state (:class:`ConnState`), its one deadline (fresh-connection and
request-head timeout, body stall timeout, keep-alive idle timeout: a number checked by the
process's sweep, see :mod:`corral.worker.deadlines`), the pipeline of parsed requests
answered strictly in order, and the hand-off of WebSocket upgrades. This module is the
per-request hot path; the timeouts, failed reads, closing, drain, shutdown and hand-off
live in its base class, :class:`~corral.worker.http1.ending.ConnectionEnding`, and flow
control in theirs, :class:`~corral.worker.transport.base.TransportBase`. Everything that
happens inside one request lives in :class:`~corral.worker.asgi.cycle.RequestCycle`.

An app's first step runs at once, as soon as its request is complete (or, for a request
whose body is still arriving, at the end of the read that brought its head): most apps
answer in that step, so a keep-alive GET is read, answered and written within one
``data_received``, with no task and no loop turn (see :mod:`corral.worker.asgi.eager`).
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import unquote

from corral.tls import tls_extension
from corral.worker.asgi.builtin_apps import HealthCheck, overloaded_app
from corral.worker.asgi.cycle import RequestCycle, RequestKind
from corral.worker.asgi.pathsend import EXTENSION as PATHSEND
from corral.worker.asgi.types import HTTP_SPEC_VERSION
from corral.worker.edge.proxy_headers import apply_to_scope
from corral.worker.http1.connstate import ConnState, InvalidTransition
from corral.worker.http1.ending import DRAIN_GRACE, LINGER, ConnectionEnding
from corral.worker.http1.parsers import ParseError, ParserLimits, RequestHead, RequestReader
from corral.worker.transport.base import PAUSE_BODY, PAUSE_PIPELINE

if TYPE_CHECKING:
    from corral.worker.asgi.types import ASGIApp
    from corral.worker.edge.accept import Proxied
    from corral.worker.edge.proxy_headers import TrustedProxies
    from corral.worker.state import ServerState

__all__ = ["DRAIN_GRACE", "LINGER", "ConnState", "HTTP1Protocol", "ListenerFacts"]

_ASGI = {"version": "3.0", "spec_version": HTTP_SPEC_VERSION}
# Hot-path aliases: identity checks against these avoid Enum attribute and hash lookups.
_IDLE, _HEAD, _BODY = ConnState.IDLE, ConnState.HEAD, ConnState.BODY
_FINISHED, _UPGRADED, _CLOSED = ConnState.FINISHED, ConnState.UPGRADED, ConnState.CLOSED


@dataclass(frozen=True, slots=True)
class ListenerFacts:
    """What the listening socket already knows about every connection it accepts."""

    #: scope["server"] when the listener is bound to one address (or a Unix path); None for
    #: a wildcard address, where each connection's own local address is asked for.
    server: tuple[str, int | None] | None = None
    #: The listener serves TLS: the connection's ssl_object is asked for (and only then).
    tls: bool = False

    @classmethod
    def of(cls, sock: socket.socket, tls: bool) -> ListenerFacts:
        """The facts for a listening socket (``tls``: it serves TLS)."""
        server: tuple[str, int | None] | None = None
        name = sock.getsockname()
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            if name[0] not in ("0.0.0.0", "::"):  # a wildcard: each connection's own address
                server = (name[0], name[1])
        elif isinstance(name, str) and name:
            server = (name, None)
        return cls(server, tls)


_NO_FACTS = ListenerFacts()


@dataclass(frozen=True, slots=True)
class _Settings:
    """The per-process settings every connection reads, made once (not per connection)."""

    limits: ParserLimits
    root_path: str
    root_path_raw: bytes
    health: bytes | None
    ws: bool
    keep_alive: float
    head: float
    body: float
    timeout_send: float
    trusted: TrustedProxies | None

    @classmethod
    def of(cls, state: ServerState, limits: ParserLimits) -> _Settings:
        config = state.config
        return cls(
            limits,
            config.root_path,
            config.root_path.encode("utf-8"),
            config.health_path.encode("utf-8") if config.health_path else None,
            config.ws_enabled,
            config.timeout_keep_alive,
            config.timeout_request_header,
            config.timeout_request_body,
            config.timeout_send,
            state.trusted_proxies,
        )


class HTTP1Protocol(ConnectionEnding):
    """One HTTP/1.1 connection (its cold half is the base class, in http1.ending)."""

    # Slots (the state shared with the cold half is slotted in the base): an idle keep-alive
    # connection costs a few hundred bytes less without a __dict__.
    __slots__ = ("_facts", "_proxied", "_request_keep_alive", "_s", "_template", "_tls")

    #: The last (state, limits, settings) made: one process has one state, so connections
    #: share one settings object instead of copying a dozen values each.
    _cache: ClassVar[tuple[object, object, _Settings] | None] = None

    def __init__(
        self,
        state: ServerState,
        limits: ParserLimits,
        loop: Any = None,
        proxied: Proxied | None = None,
        *,
        listener: ListenerFacts = _NO_FACTS,
    ) -> None:
        cache = HTTP1Protocol._cache
        if cache is None or cache[0] is not state or cache[1] is not limits:
            cache = HTTP1Protocol._cache = (state, limits, _Settings.of(state, limits))
        s = self._s = cache[2]
        self.state = state
        self._proxied = proxied  # the client a PROXY protocol header named
        self._facts = listener
        self._tls: dict[str, Any] | None = None
        self._template: dict[str, Any] | None = None  # this connection's scope, made lazily
        self._loop: asyncio.AbstractEventLoop = loop or asyncio.get_running_loop()
        self._keep_alive_timeout = s.keep_alive
        self._head_timeout = s.head
        self._body_timeout = s.body
        self._st = _IDLE
        self._requests = 0
        self._active: RequestCycle | None = None  # the cycle whose response is in progress
        self._starting: ASGIApp | None = None
        self._parsing: RequestCycle | None = None  # the cycle receiving body bytes
        # Pipelined requests waiting their turn; a list (an empty deque costs ~600 bytes
        # per connection, and pipelines are short).
        self._queue: list[tuple[RequestCycle, ASGIApp]] = []
        self._request_keep_alive = True
        self._pending_error: tuple[int, str] | None = None
        self._upgrade_head: RequestHead | None = None
        self._draining = False
        self.client: tuple[str, int] | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.attach(transport, self._s.timeout_send)  # type: ignore[arg-type]
        self.parser = RequestReader(self, self._s.limits)
        peer = transport.get_extra_info("peername")
        if type(peer) is tuple:  # (host, port), or (host, port, flow, scope) for IPv6
            self.client = peer[:2]
        if self._proxied is not None:
            self.client = self._proxied.client
        if self._facts.tls:
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is not None:
                self._tls = tls_extension(ssl_object)
        self.state.connections.add(self)
        # A fresh connection must deliver its first request head within the head timeout.
        self._sweep = self.state.deadline_sweep(self._loop)
        self.deadline = self._loop.time() + self._head_timeout
        self._sweep.watch(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._st = _CLOSED
        self.deadline = 0.0
        self._sweep.forget(self)
        self.transport_lost()
        for cycle in (self._active, self._parsing):
            if cycle is not None:
                cycle.on_disconnect()
        for cycle, _ in self._queue:
            cycle.on_disconnect()
        self._queue.clear()
        self._active = self._parsing = None
        self._starting = None
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
            if self._requests or self._draining:
                # The keep-alive (or drain grace) clock stops; the head's starts.
                self.deadline = self._loop.time() + self._head_timeout
        elif st is _BODY:
            self.deadline = self._loop.time() + self._body_timeout  # a byte: not stalled
        elif st is not _HEAD and st is not _UPGRADED:
            return  # FINISHED or CLOSED: bytes after the last request are never parsed
        try:
            self.parser.feed(data)
        except ParseError as exc:
            if self._starting is not None:  # its body was bad: the app never starts
                self._starting = self._active = self._parsing = None
            self._on_parse_error(exc)
            return
        if self._starting is not None:  # a head whose body is still to come
            self._launch()
        st = self._st
        if st is _BODY and not self.deadline:
            self.deadline = self._loop.time() + self._body_timeout
        elif st is _UPGRADED:
            self._try_handoff()

    # --- parser sink --------------------------------------------------------------------
    def on_head(self, head: RequestHead) -> bool:
        st = self._st
        if st is not _HEAD and st is not _IDLE:
            raise InvalidTransition(f"HTTP connection: request head while {st.value}")
        self.deadline = 0.0  # the head is complete
        if self._draining and self._active is not None:
            self._to(_FINISHED)  # draining: pipelined requests are not taken
            return True
        self._requests += 1
        state = self.state
        # While stopping (--timeout-shutdown-delay), every response says Connection: close.
        draining = state.draining or self._draining
        keep_alive = self._request_keep_alive = head.keep_alive and not draining
        limit = state.limit_concurrency
        over_limit = limit is not None and state.over_limit()
        upgrade = head.upgrade
        if upgrade is not None and upgrade == b"websocket" and self._s.ws:
            if not (over_limit or draining):
                self._upgrade_head = head
                self._to(_UPGRADED)
                return True
            over_limit = True  # a WebSocket opened now would only be cut at the deadline: 503
        cycle = RequestCycle(self, self._scope(head), RequestKind.of(head, keep_alive))
        self._parsing = cycle
        self._st = _BODY
        if self._s.health is not None and head.raw_path == self._s.health:
            app: ASGIApp = HealthCheck(state)  # not counted: probes must not recycle workers
        else:
            state.total_requests += 1
            app = overloaded_app if over_limit else state.app  # type: ignore[assignment]
        if self._active is None:
            # Started once the request is complete or this read is used up (whichever
            # comes first), so the connection's state is settled when the app runs.
            self._active = cycle
            self._starting = app
        else:
            self._queue.append((cycle, app))
            self.pause_reading(PAUSE_PIPELINE)
        return False

    def on_body(self, data: bytes) -> None:
        cycle = self._parsing
        if cycle is not None:
            cycle.on_body(data)

    def on_message_complete(self) -> bool:
        """The request is complete; True when no further request is to be read."""
        cycle = self._parsing
        self._parsing = None
        self.deadline = 0.0
        if cycle is not None:
            cycle.on_body_complete()
        if self._st is not _BODY:
            raise InvalidTransition(f"HTTP connection: message end while {self._st.value}")
        if not self._request_keep_alive or self._draining:
            self._st = _FINISHED
            if self._starting is not None:
                self._launch()
            elif self._active is None:
                self.close_connection()
            return True
        self._st = _IDLE
        if self._starting is not None:
            self._launch()  # most apps answer here and now (see the module docstring)
        elif self._active is None:
            self._idle()
        return self._st is not _IDLE  # the response closed the connection

    # --- scope ----------------------------------------------------------------------------
    def _scope(self, head: RequestHead) -> dict[str, Any]:
        template = self._template
        if template is None:
            template = self._template = self._make_template()
        scope = template.copy()
        raw_path = head.raw_path
        path = raw_path.decode("latin-1")
        if b"%" in raw_path:
            path = unquote(path)  # percent-decoded as UTF-8 (the target is ASCII)
        s = self._s
        if s.root_path:
            path = s.root_path + path
            raw_path = s.root_path_raw + raw_path
        scope["asgi"] = _ASGI.copy()
        scope["http_version"] = head.http_version
        scope["method"] = head.method
        scope["path"] = path
        scope["raw_path"] = raw_path
        scope["query_string"] = head.query_string
        scope["headers"] = head.headers
        scope["state"] = self.state.lifespan_state.copy()
        tls = self._tls
        scope["extensions"] = {PATHSEND: {}} if tls is None else {PATHSEND: {}, "tls": tls}
        if s.trusted is not None:
            apply_to_scope(scope, s.trusted)
        return scope

    def _make_template(self) -> dict[str, Any]:
        """What every request on this connection shares (made at its first request)."""
        server = self._facts.server
        if server is None:
            sock = self.transport.get_extra_info("sockname")
            if type(sock) is tuple:
                server = sock[:2]
            elif isinstance(sock, str) and sock:
                server = (sock, None)
        return {
            "type": "http",
            "server": server,
            "client": self.client,
            "scheme": "https" if self._tls is not None or self._facts.tls else "http",
            "root_path": self._s.root_path,
        }

    # --- the pipeline -----------------------------------------------------------------------
    def _launch(self) -> None:
        """Run the first step of the app for :attr:`_active` (set by on_head) at once."""
        app = self._starting
        cycle = self._active
        self._starting = None
        if app is not None and cycle is not None:
            self.state.start_request(self._loop, cycle.run_asgi(app))

    def response_complete(self, cycle: RequestCycle) -> None:
        """Called by the active cycle once its response is fully written."""
        if cycle is not self._active:
            return
        self._active = None
        if self._st is _CLOSED:
            return
        if not cycle.keep_alive or self._draining:
            self.close_connection(linger=self._parsing is not None)
            return
        if self._parsing is cycle and cycle.expect_continue:
            # Answered before its body, and 100 never sent: the body may or may not come.
            self.close_connection(linger=True)
            return
        if self.read_paused & PAUSE_BODY:  # body the app never read: the rest is dropped
            self.resume_reading(PAUSE_BODY)
        queue = self._queue
        if queue:
            next_cycle, app = queue.pop(0)
            if not queue:
                self.resume_reading(PAUSE_PIPELINE)
            # An ordinary task, not run at once: this runs inside the previous app's
            # send(), and a long pipeline would otherwise nest one app inside the next.
            self._active = next_cycle
            self.state.start_task(self._loop, next_cycle.run_asgi(app))
            return
        st = self._st
        if self._pending_error is not None:
            self._send_error(*self._pending_error)
        elif st is _UPGRADED:
            self._try_handoff()
        elif st is _FINISHED:
            self.close_connection()
        elif st is _IDLE:
            self._idle()

    def _idle(self) -> None:
        """Nothing in flight and no byte of a next request: the keep-alive clock runs."""
        if self._keep_alive_timeout > 0:
            self.deadline = self._loop.time() + self._keep_alive_timeout
        else:
            self.close_connection()  # --timeout-keep-alive 0: no reuse at all
