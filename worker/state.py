"""Per-process serving state shared by every connection, and the connection contract.

One :class:`ServerState` exists per serving process. Connections read their settings and
the pre-encoded default response headers from it, register themselves in
:attr:`ServerState.connections`, and the running app tasks live in :attr:`ServerState.tasks`.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Coroutine
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from corral.worker.asgi.eager import start_eager
from corral.worker.dates import DateClock
from corral.worker.deadlines import DeadlineSweep

if TYPE_CHECKING:
    from corral.config import Config
    from corral.worker.asgi.types import ASGIApp
    from corral.worker.edge.proxy_headers import TrustedProxies


class ShutdownReason(Enum):
    """Why connections are being closed; the value is the WebSocket close code to send."""

    STOP = 1001  # going away: the process is stopping
    RESTART = 1012  # service restart: a reload or recycle replaces this worker

    @property
    def ws_close_code(self) -> int:
        return self.value


class ConnectionProtocol(Protocol):
    """What every live connection object (HTTP or WebSocket) offers the server."""

    def start_drain(self) -> None:
        """Stop taking new requests; close at once if idle, else after the current one."""

    def shutdown_now(self, reason: ShutdownReason) -> None:
        """The drain deadline passed: end the connection now."""


class ServerState:
    """Settings, default headers, live connections and tasks of one serving process."""

    def __init__(self, config: Config, app: ASGIApp | None = None) -> None:
        self.config = config
        self.app: ASGIApp | None = app
        #: The lifespan ``state`` dict; each request scope gets a shallow copy of it.
        self.lifespan_state: dict[str, Any] = {}
        self.connections: set[ConnectionProtocol] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        #: What every app task starts from (a copy each time), captured when serving starts.
        #: Never the context of whatever callback starts the task: on the asyncio loop a
        #: read resumed from inside a request's task runs later reads, and the next
        #: request, in that request's context (CPython gh-140947).
        self.task_context = contextvars.copy_context()
        self._fresh_contexts = config.reset_contextvars
        self.total_requests = 0
        self.draining = False
        self.limit_concurrency = config.limit_concurrency
        #: Parsed --forwarded-allow-ips when --proxy-headers is on (set by the Server).
        self.trusted_proxies: TrustedProxies | None = None
        self.access_log = False
        self.refresh_logging()

        extra = [
            (name.lower().encode("latin-1"), v.encode("latin-1")) for name, v in config.headers
        ]
        server: list[tuple[bytes, bytes]] = []
        if config.server_header and not any(n == b"server" for n, _ in extra):
            server = [(b"server", b"corral")]
        self._static_headers = server + extra
        self._static_block = b"".join(n + b": " + v + b"\r\n" for n, v in self._static_headers)
        #: Lower-cased names of the default headers, which a header set by the app replaces.
        self.default_names = frozenset(
            [n for n, _ in self._static_headers] + ([b"date"] if config.date_header else [])
        )
        #: Checked app header sets, for HTTP/1.1 and HTTP/1.0 (see corral.worker.http1.writer).
        self.header_cache: tuple[dict[Any, Any], dict[Any, Any]] = ({}, {})
        self.clock = DateClock(self._on_date_change)
        #: Pre-encoded default header lines (Server, Date, --header), refreshed every second.
        self.header_block = b""
        self._on_date_change(self.clock.value)
        self._idle_waiter: asyncio.Future[None] | None = None
        #: Called by :meth:`notify_change` (a forked worker republishes its load with it).
        self.on_change: Callable[[], None] | None = None
        self._sweep: DeadlineSweep | None = None

    def deadline_sweep(self, loop: asyncio.AbstractEventLoop) -> DeadlineSweep:
        """The process's one deadline sweep (made by the first HTTP connection)."""
        sweep = self._sweep
        if sweep is None:
            config = self.config
            timeouts = [
                t
                for t in (
                    config.timeout_keep_alive,
                    config.timeout_request_header,
                    config.timeout_request_body,
                )
                if t > 0
            ]
            sweep = self._sweep = DeadlineSweep(loop, min(timeouts))
        return sweep

    def refresh_logging(self) -> None:
        """Decide once whether access lines are wanted (config flag and logger level)."""
        logger = logging.getLogger("corral.access")
        self.access_log = self.config.access_log and logger.isEnabledFor(logging.INFO)

    def _on_date_change(self, date: bytes) -> None:
        if self.config.date_header:
            self.header_block = self._static_block + b"date: " + date + b"\r\n"
        else:
            self.header_block = self._static_block

    def default_headers(self, exclude: frozenset[bytes] = frozenset()) -> list[tuple[bytes, bytes]]:
        """The default headers as pairs (for handshakes), minus the names in ``exclude``."""
        pairs = [p for p in self._static_headers if p[0] not in exclude]
        if self.config.date_header and b"date" not in exclude:
            pairs.append((b"date", self.clock.value))
        return pairs

    def header_block_without(self, exclude: set[bytes]) -> bytes:
        """The default header lines minus names the app set itself (the rare path)."""
        return b"".join(
            n + b": " + v + b"\r\n" for n, v in self.default_headers(frozenset(exclude))
        )

    def over_limit(self) -> bool:
        """True when a new request would exceed ``--limit-concurrency``.

        The connection asking is already counted in :attr:`connections`, so the limit is
        reached when more than N connections are open or N app tasks are running.
        """
        limit = self.limit_concurrency
        return limit is not None and (len(self.connections) > limit or len(self.tasks) >= limit)

    # --- drain bookkeeping -------------------------------------------------------------
    def start_task(
        self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]
    ) -> asyncio.Task[None]:
        """Run one app coroutine (a request or a WebSocket) as a counted task.

        It runs in a copy of :attr:`task_context`, or in an empty context with
        ``--reset-contextvars``; the task is counted until it finishes (for the limit and
        for the drain).
        """
        context = contextvars.Context() if self._fresh_contexts else self.task_context.copy()
        task = loop.create_task(coro, context=context)
        self.tasks.add(task)
        task.add_done_callback(self.task_done)
        return task

    def start_request(
        self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]
    ) -> None:
        """Run one HTTP request's app coroutine, its first step at once (see asgi.eager).

        The same context as :meth:`start_task`; a request that waits is counted as a task
        from then on, one answered in its first step never was in flight.
        """
        context = contextvars.Context() if self._fresh_contexts else self.task_context.copy()
        task = start_eager(loop, coro, context)
        if task is not None:
            self.tasks.add(task)
            task.add_done_callback(self.task_done)

    def task_done(self, task: asyncio.Task[None]) -> None:
        """Done callback of every app task (see :meth:`start_task`)."""
        self.tasks.discard(task)
        if self._idle_waiter is not None:
            self.notify_change()

    def notify_change(self) -> None:
        """A connection or task went away; wake :meth:`wait_idle` if it is waiting."""
        if self.on_change is not None:
            self.on_change()
        waiter = self._idle_waiter
        if waiter is not None and not waiter.done() and not self.connections and not self.tasks:
            waiter.set_result(None)

    async def wait_idle(self) -> None:
        """Return once no connection is open and no app task is running."""
        while self.connections or self.tasks:
            self._idle_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._idle_waiter
            finally:
                self._idle_waiter = None
