"""The entry of a forked worker under the master: serve, report, beat, retire, drain.

What runs here, in order:

1. Signals: SIGINT is ignored (Ctrl+C reaches the whole process group; the master
   coordinates the stop), SIGABRT dumps every thread's Python stack through faulthandler
   and then dies (the master sends it to a worker whose loop stopped beating).
2. ``BOOTING`` to the master, then the app import unless the master preloaded it.
3. A fresh event loop (uvloop or asyncio per ``--loop``) running the serving core, with
   SIGTERM (drain and stop), SIGQUIT (stop now) and SIGUSR1 (reopen logs) on the loop.
4. ``READY`` once lifespan startup is done and sockets are served, then ``BEAT`` from a
   timer on this same loop, so a blocked loop stops beating and the master notices.
5. ``RETIRING max-requests`` once past ``--limit-max-requests`` (+ jitter). The worker keeps
   serving until the master, with a replacement READY, sends ``DRAIN restart``.
6. On channel EOF (the master died) the worker drains and exits by itself.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import signal
import socket
import sys
from typing import TYPE_CHECKING, Any

from corral.errors import CorralError, ExitCode, StartupError
from corral.worker import bootlog, channel
from corral.worker.channel import ChannelError, Decoder, Kind
from corral.worker.state import ShutdownReason

if TYPE_CHECKING:
    from corral.config import Config
    from corral.listeners import Listener
    from corral.worker.balance import LoadTable
    from corral.worker.serving import Server

logger = logging.getLogger("corral.error")


class Link:
    """The worker's end of its channel: sends never block (a stuck master loses beats, it
    does not stall the worker's loop) and a dead master is simply ignored."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.setblocking(False)
        self.decoder = Decoder()
        self.open = True

    def send(self, data: bytes) -> None:
        if not self.open:
            return
        try:
            self.sock.send(data)
        except BlockingIOError:
            pass  # the master is behind; a lost beat is harmless, the next one follows
        except OSError:
            self.open = False  # the master is gone; EOF handling stops the worker


def _max_requests(config: Config) -> int | None:
    if config.limit_max_requests is None:
        return None
    if not config.limit_max_requests_jitter:
        return config.limit_max_requests
    import random  # only with a jitter: the module is 400 KB a worker need not carry

    return config.limit_max_requests + random.randint(0, config.limit_max_requests_jitter)


def run_worker(
    config: Config,
    listeners: list[Listener],
    channel_sock: socket.socket,
    slot: int,
    generation: int,
    app: Any = None,
    load_table: LoadTable | None = None,
) -> ExitCode:
    """Serve as worker ``slot`` of ``generation`` until drained, stopped or orphaned.

    ``load_table`` is the master's shared table this worker publishes its load in, to
    balance connections with its siblings (see :mod:`corral.worker.balance`).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # enable() covers SIGABRT (register() may not take it): dump every thread, then die.
    faulthandler.enable(file=sys.stderr, all_threads=True)
    link = Link(channel_sock)
    link.send(channel.booting(os.getpid()))
    if app is None:
        from corral.loading import load_app

        try:
            app = load_app(config)
        except CorralError as exc:
            logger.error("%s", exc)
            link.send(channel.fatal(int(exc.exit_code)))
            return exc.exit_code
    from corral.worker.process import loop_factory

    loop = loop_factory(config)()
    asyncio.set_event_loop(loop)
    try:
        code = loop.run_until_complete(_serve(config, listeners, link, app, load_table))
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
    if code is not ExitCode.OK:
        link.send(channel.fatal(int(code)))
    return code


class _Supervised:
    """Callbacks tying one Server to the master: READY, beats, retirement, commands."""

    def __init__(self, config: Config, server: Server, link: Link) -> None:
        self.config = config
        self.server = server
        self.link = link
        self.started = False
        self.interval = channel.beat_interval(config.timeout_worker_healthcheck)
        self.max_requests = _max_requests(config)
        self.retiring = False
        self._timer: asyncio.TimerHandle | None = None

    def on_started(self) -> None:
        self.started = True
        bootlog.ready()  # error lines held while booting (see corral.worker.bootlog)
        self.link.send(channel.ready())
        self._beat()

    def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        total = self.server.state.total_requests
        self.link.send(channel.beat(total))
        if (
            self.max_requests is not None
            and total >= self.max_requests
            and not self.retiring
            and not self.server.should_exit
        ):
            self.retiring = True
            logger.info(
                "Served %d requests (limit %d); asking to be replaced", total, self.max_requests
            )
            self.link.send(channel.retiring("max-requests"))
        self._timer = loop.call_later(self.interval, self._beat)

    def stop_beating(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def on_channel(self) -> None:
        try:
            messages = self.link.decoder.receive(self.link.sock)
        except ChannelError as exc:
            logger.error("Bad message from the master: %s", exc)
            return
        if messages is None:
            asyncio.get_running_loop().remove_reader(self.link.sock.fileno())
            self.link.open = False
            if not self.server.should_exit:
                logger.warning("The master process is gone; stopping")
            self.server.request_stop(ShutdownReason.STOP)
            return
        for message in messages:
            if message.kind is Kind.DRAIN:
                restart = message.arg == channel.DRAIN_RESTART
                self.server.request_stop(ShutdownReason.RESTART if restart else ShutdownReason.STOP)


async def _serve(
    config: Config,
    listeners: list[Listener],
    link: Link,
    app: Any,
    load_table: LoadTable | None = None,
) -> ExitCode:
    from corral.logging import reopen_logs
    from corral.worker.serving import Server

    loop = asyncio.get_running_loop()
    server = Server(config, app)
    server.load_table = load_table
    hooks = _Supervised(config, server, link)
    loop.add_signal_handler(
        signal.SIGTERM, lambda: server.request_stop(ShutdownReason.STOP, lame_duck=True)
    )
    loop.add_signal_handler(
        signal.SIGQUIT, lambda: server.request_stop(ShutdownReason.STOP, immediate=True)
    )
    loop.add_signal_handler(signal.SIGUSR1, reopen_logs)
    loop.add_reader(link.sock.fileno(), hooks.on_channel)
    try:
        await server.serve([item.sock for item in listeners], on_started=hooks.on_started)
    except StartupError as exc:
        return exc.exit_code  # the lifespan already logged the app's message
    except CorralError as exc:
        logger.error("%s", exc)
        return exc.exit_code
    finally:
        hooks.stop_beating()
        if link.open:
            loop.remove_reader(link.sock.fileno())
    return ExitCode.OK if hooks.started else ExitCode.APP_FAILED
