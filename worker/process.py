"""Single-process mode: one :class:`~corral.worker.serving.Server` on its own event loop.

Signals: SIGINT and SIGTERM stop gracefully (SIGTERM after ``--timeout-shutdown-delay``), a
second SIGINT stops at once, SIGHUP is logged and ignored (reloading needs ``--workers``).
The handlers only record the request on the server; the serving loop does the work.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

from corral.errors import AppLoadError, ConfigError, ExitCode, StartupError
from corral.worker.serving import Server

if TYPE_CHECKING:
    from corral.config import Config
    from corral.listeners import Listener
    from corral.worker.asgi.types import ASGIApp

logger = logging.getLogger("corral.error")


def loop_factory(config: Config) -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's loop when asked for or (auto) installed, else asyncio's."""
    if config.loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if config.loop == "uvloop":
                raise ConfigError("--loop", "uvloop is not installed") from None
        else:
            factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
            return factory
    return asyncio.new_event_loop


class _Signals:
    """Records INT/TERM/HUP as stop requests on the server (nothing else runs in them)."""

    def __init__(self, server: Server, notify: Callable[[str], None] | None = None) -> None:
        self.server = server
        self.interrupts = 0
        self.notify = notify

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_signal_handler(signal.SIGINT, self.on_interrupt)
        loop.add_signal_handler(signal.SIGTERM, self.on_terminate)
        loop.add_signal_handler(signal.SIGHUP, self.on_hangup)

    def on_interrupt(self) -> None:
        self.interrupts += 1
        self.server.request_stop(immediate=self.interrupts > 1)
        if self.notify is not None:
            self.notify("stopping")

    def on_terminate(self) -> None:
        self.server.request_stop(lame_duck=True)
        if self.notify is not None:
            self.notify("stopping")

    def on_hangup(self) -> None:
        logger.info("Received SIGHUP; reloading needs --workers, so it is ignored.")


def run_single(
    config: Config,
    listeners: list[Listener],
    app: ASGIApp | None = None,
    notify: Callable[[str], None] | None = None,
) -> ExitCode:
    """Serve on ``listeners`` in this process until a signal stops it; returns the exit code.

    ``notify`` (systemd's, from serve_config) is told "booting" before the app loads, "ready"
    once serving, and "stopping" on a stop.
    """
    from corral.logging import banner_lines

    server = Server(config, app)

    def started() -> None:
        for line in banner_lines(listeners):
            logger.info(line)
        if notify is not None:
            notify("ready")

    if notify is not None:
        notify("booting")
    with asyncio.Runner(loop_factory=loop_factory(config)) as runner:
        _Signals(server, notify).install(runner.get_loop())
        try:
            runner.run(server.serve([listener.sock for listener in listeners], started))
        except AppLoadError as exc:
            logger.error("%s", exc)
            return ExitCode.APP_FAILED
        except StartupError:
            return ExitCode.APP_FAILED  # the lifespan already logged why
    return ExitCode.OK
