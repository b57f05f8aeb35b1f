"""The serving unit: :class:`Server` runs lifespan, accepts connections, drains, stops.

The single process (:func:`corral.worker.process.run_single`) and every forked worker run
the same :class:`Server`; only who owns the listening sockets and the signals differs.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import functools
import logging
import os
import socket
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from corral.worker.asgi.lifespan import Lifespan
from corral.worker.balance import RETRY_DELAY, Balancer, balancer_for
from corral.worker.clientlog import Kind, client_log
from corral.worker.edge.accept import Edge, connect_edge
from corral.worker.http1.parsers import ParserLimits
from corral.worker.http1.protocol import HTTP1Protocol, ListenerFacts
from corral.worker.state import ServerState, ShutdownReason

if TYPE_CHECKING:
    from corral.config import Config
    from corral.listeners import Listener
    from corral.worker.asgi.types import ASGIApp
    from corral.worker.balance import LoadTable

logger = logging.getLogger("corral.error")

#: After the drain deadline, cancelled app tasks get this long to unwind.
CANCEL_GRACE = 1.0


class Acceptor:
    """Accepts connections from one listening socket, alone or shared with sibling workers.

    ``loop.create_server`` accepts until the queue is empty, so with several forked workers
    on one socket whichever wakes first takes every waiting connection. Taking at most
    :attr:`batch` per wake-up leaves the rest to the siblings, which spreads the load;
    with a :class:`~corral.worker.balance.Balancer` a worker ahead of its least-loaded
    sibling also leaves the socket alone for a moment (see :mod:`corral.worker.balance`).

    A single process uses it too, because of what happens out of file descriptors: libuv
    (uvloop's ``create_server``) then accepts and closes waiting connections without a
    word, while this acceptor logs the error (rate-limited) and leaves them queued in the
    kernel's backlog for a moment, as trio does for the same errno set.
    """

    #: Connections accepted per readiness callback: enough to keep up with bursts in one
    #: loop turn, few enough that a sibling woken by the same event finds work too.
    batch = 8
    #: Pause after EMFILE/ENFILE/ENOBUFS/ENOMEM so a process out of descriptors doesn't
    #: spin, short enough that it resumes soon after connections close (trio's 0.1 s).
    overload_pause = 0.1

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol_factory: Callable[..., asyncio.Protocol],
        edge: Edge | None = None,
        balancer: Balancer | None = None,
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._factory = protocol_factory
        self._edge = edge  # PROXY header and/or TLS to go through first
        self._tcp = sock.family in (socket.AF_INET, socket.AF_INET6)
        self._reading = False
        self._pending: set[asyncio.Task[Any]] = set()
        self._balancer = balancer
        self._resume: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._resume = None
        if not self._reading:
            self._loop.add_reader(self._sock.fileno(), self._on_readable)
            self._reading = True

    def stop(self) -> None:
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        if self._reading:
            self._loop.remove_reader(self._sock.fileno())
            self._reading = False

    def _pause(self, delay: float) -> None:
        self.stop()
        self._resume = self._loop.call_later(delay, self.start)

    def _wake(self) -> None:
        """End a deferral early (one of this worker's connections closed)."""
        if self._resume is not None:  # still paused, not stopped meanwhile
            self._resume.cancel()
            self.start()

    def _on_readable(self) -> None:
        balancer = self._balancer
        count = self.batch
        if balancer is not None:
            count = balancer.allowance(self.batch)
            if count <= 0:  # ahead of a sibling: let it take this one
                self._pause(RETRY_DELAY)
                balancer.wake_on_change(self._wake)
                return
        for _ in range(count):
            try:
                conn, _addr = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    message = "Out of resources accepting connections (%s); pausing"
                    client_log(Kind.ACCEPT_OVERLOAD, logging.ERROR, message, exc)
                    self._pause(self.overload_pause)
                    return
                raise
            conn.setblocking(False)
            if self._tcp:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            setup: Coroutine[Any, Any, Any]
            if self._edge is not None:
                setup = connect_edge(self._loop, conn, self._edge, self._factory)
            elif balancer is not None:
                setup = self._loop.connect_accepted_socket(self._counted_factory, conn)
            else:
                setup = self._loop.connect_accepted_socket(self._factory, conn)
            task = self._loop.create_task(setup)
            self._pending.add(task)
            task.add_done_callback(self._connected)
            if balancer is not None:
                balancer.setting_up += 1
                balancer.publish()

    @property
    def pending(self) -> set[asyncio.Task[Any]]:
        """Accepted connections still being set up (PROXY header, TLS handshake)."""
        return self._pending

    def _counted_factory(self) -> asyncio.Protocol:
        """The protocol factory when balancing a plain connection: the loop queues the
        protocol's ``connection_made`` (which adds it to ``state.connections``) right after
        this returns, so the connection leaves ``setting_up`` in the same loop turn and is
        never counted twice or not at all."""
        if self._balancer is not None:
            self._loop.call_soon(self._balancer.set_up)
        return self._factory()

    def _connected(self, task: asyncio.Task[Any]) -> None:
        self._pending.discard(task)
        if self._balancer is not None and self._edge is not None:
            self._balancer.set_up()  # PROXY header/TLS connections: counted until here
        if not task.cancelled() and task.exception() is not None:
            logger.debug("Connection setup failed: %s", task.exception())


class Server:
    """One serving process's server (see the module docstring)."""

    def __init__(self, config: Config, app: ASGIApp | None = None) -> None:
        self.config = config
        self.state = ServerState(config, app)
        self.started = False
        self.force_exit = False
        self.shutdown_reason = ShutdownReason.STOP
        #: Seconds to keep serving with ``Connection: close`` before stopping (SIGTERM).
        self.lame_duck = 0.0
        self._should_exit = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._acceptors: list[Acceptor] = []
        self._own_listeners: list[Listener] = []
        self._lifespan: Lifespan | None = None
        #: The master's shared load table (forked workers only; see corral.worker.balance).
        self.load_table: LoadTable | None = None
        self._balancer: Balancer | None = None

    # --- stopping ------------------------------------------------------------------------
    @property
    def should_exit(self) -> bool:
        return self._should_exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._should_exit = value
        if value:
            self._notify()

    def _notify(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            loop.call_soon_threadsafe(wake.set)

    def request_stop(
        self,
        reason: ShutdownReason = ShutdownReason.STOP,
        *,
        immediate: bool = False,
        lame_duck: bool = False,
    ) -> None:
        """Stop gracefully (or at once); safe from signal handlers and other threads.

        ``lame_duck`` first keeps serving for ``--timeout-shutdown-delay`` seconds with
        ``Connection: close`` (and the health path answering 503), so load balancers take
        the instance out of rotation before it stops accepting.
        """
        self.shutdown_reason = reason
        if lame_duck and not immediate:
            self.lame_duck = self.config.timeout_shutdown_delay
        if immediate:
            self.force_exit = True
        self.should_exit = True

    # --- serving -------------------------------------------------------------------------
    def run(self, sockets: list[socket.socket] | None = None) -> None:
        """Serve on a new event loop (uvloop when configured) until stopped, as uvicorn's."""
        from corral.worker.process import loop_factory

        with asyncio.Runner(loop_factory=loop_factory(self.config)) as runner:
            runner.run(self.serve(sockets))

    async def serve(
        self,
        sockets: list[socket.socket] | None = None,
        on_started: Callable[[], None] | None = None,
    ) -> None:
        """Start up, serve until asked to stop, then drain and shut down (see the guide)."""
        from corral.logging import ensure_logging

        if ensure_logging(self.config):  # embedded without logging set up: uvicorn's lines
            self.state.refresh_logging()
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        if self._should_exit:
            self._wake.set()
        if self.state.app is None:
            from corral.loading import load_app

            self.state.app = load_app(self.config)
        pid = os.getpid()
        logger.info("Started server process [%d]", pid)
        try:
            await self._startup(sockets)
        except BaseException:
            # Failing after the app started (a listener, the TLS files): let it clean up.
            if self._lifespan is not None:
                await self._lifespan.shutdown(self.config.timeout_lifespan_shutdown)
            self.state.clock.stop()
            raise
        if on_started is not None:
            on_started()
        await self._wake.wait()
        await self._shutdown()
        client_log.flush()  # the summaries of lines left out, before the last line
        logger.info("Finished server process [%d]", pid)

    async def _startup(self, sockets: list[socket.socket] | None) -> None:
        state, config = self.state, self.config
        app = state.app
        if app is None:  # pragma: no cover - set by serve()
            raise RuntimeError("no app to serve")
        # Built here, in the serving process: a reload's new workers re-read the cert files.
        edge = Edge(config)
        state.trusted_proxies = edge.trusted
        self._lifespan = Lifespan(app, config.lifespan, state.lifespan_state)
        await self._lifespan.startup()
        state.refresh_logging()
        loop = self._loop
        if loop is None:  # pragma: no cover - set by serve()
            raise RuntimeError("serve() not running")
        if sockets is None:
            from corral.listeners import open_listeners

            self._own_listeners = open_listeners(config)
            sockets = [listener.sock for listener in self._own_listeners]
        state.clock.start(loop)
        state.task_context = contextvars.copy_context()  # see ServerState.task_context
        limits = ParserLimits.from_config(config)
        self._balancer = balancer_for(self.load_table, state.connections)
        if self._balancer is not None:
            state.on_change = self._balancer.changed  # a closed connection lowers the load
        for sock in sockets:
            facts = ListenerFacts.of(sock, edge.ssl is not None)
            factory = functools.partial(HTTP1Protocol, state, limits, loop, listener=facts)
            edged = edge if edge.needs_acceptor else None
            acceptor = Acceptor(loop, sock, factory, edged, self._balancer)
            acceptor.start()
            self._acceptors.append(acceptor)
        self.started = True
        if self._own_listeners:
            from corral.logging import banner_lines

            for line in banner_lines(self._own_listeners):
                logger.info(line)

    async def _shutdown(self) -> None:
        state = self.state
        if self.lame_duck > 0 and not self.force_exit:
            state.draining = True  # health answers 503; responses carry Connection: close
            self._wake = asyncio.Event()
            try:
                await asyncio.wait_for(self._wake.wait(), self.lame_duck)
            except TimeoutError:
                pass
        logger.info("Shutting down")
        for acceptor in self._acceptors:
            acceptor.stop()
        if self._balancer is not None:
            self._balancer.withdraw()
        setups = [task for acceptor in self._acceptors for task in acceptor.pending]
        if setups and not self.force_exit:
            # Connections accepted but still in their TLS handshake join the drain below
            # (answered with Connection: close) instead of being cut off mid-handshake.
            await asyncio.wait(setups, timeout=self.config.timeout_graceful_shutdown)
        for task in setups:
            task.cancel()  # still not through its handshake: drop it
        state.draining = True
        for conn in list(state.connections):
            conn.start_drain()
        if not self.force_exit and (state.connections or state.tasks):
            self._wake = asyncio.Event()
            idle = asyncio.ensure_future(state.wait_idle())
            forced = asyncio.ensure_future(self._wake.wait())
            timeout = self.config.timeout_graceful_shutdown
            await asyncio.wait({idle, forced}, timeout=timeout, return_when="FIRST_COMPLETED")
            idle.cancel()
            forced.cancel()
            if state.connections or state.tasks:
                logger.info(
                    "Graceful shutdown ended with %d connections and %d tasks still open;"
                    " closing them.",
                    len(state.connections),
                    len(state.tasks),
                )
        for conn in list(state.connections):
            conn.shutdown_now(self.shutdown_reason)
        if state.tasks:
            # One loop turn first: apps waiting in receive() get the disconnect that
            # shutdown_now() just queued (WebSocket 1001/1012, http.disconnect) and can end
            # on their own; only what is still running after that is cancelled.
            await asyncio.sleep(0)
        tasks = list(state.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CANCEL_GRACE)
        if self._lifespan is not None and not self.force_exit:
            await self._lifespan.shutdown(self.config.timeout_lifespan_shutdown)
        state.clock.stop()
        if self._own_listeners:
            from corral.listeners import close_listeners

            close_listeners(self._own_listeners)
            self._own_listeners = []
