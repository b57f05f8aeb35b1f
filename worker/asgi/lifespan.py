"""The ASGI lifespan protocol: the app's startup before serving and shutdown after the drain.

``--lifespan auto`` runs it and accepts an app that doesn't support it (it raises before
answering startup); ``on`` treats any lifespan failure as fatal; ``off`` never runs it.
Startup failure raises :class:`~corral.errors.StartupError` carrying the app's message.
"""

from __future__ import annotations

import asyncio
import logging
from enum import Enum
from typing import TYPE_CHECKING, Any

from corral.errors import StartupError
from corral.worker.asgi.types import LIFESPAN_SPEC_VERSION

if TYPE_CHECKING:
    from corral.worker.asgi.types import ASGIApp, Message

logger = logging.getLogger("corral.error")


class LifespanPhase(Enum):
    IDLE = "idle"  # not started
    STARTING = "starting"  # lifespan.startup sent, waiting for the answer
    STARTED = "started"  # startup complete: serving
    UNSUPPORTED = "unsupported"  # auto mode, and the app doesn't do lifespan
    SHUTTING_DOWN = "shutting-down"
    STOPPED = "stopped"
    FAILED = "failed"


#: The phases that wait for the app's answer, and the type that answer starts with.
_AWAITED = {
    LifespanPhase.STARTING: "lifespan.startup",
    LifespanPhase.SHUTTING_DOWN: "lifespan.shutdown",
}


class LifespanError(RuntimeError):
    """The app sent a lifespan message that is invalid at this point."""


class Lifespan:
    """Runs one app's lifespan: :meth:`startup` then, after serving, :meth:`shutdown`."""

    def __init__(self, app: ASGIApp, mode: str, state: dict[str, Any]) -> None:
        self.app = app
        self.mode = mode
        self.state = state
        self.phase = LifespanPhase.IDLE
        self._events: asyncio.Queue[Message] = asyncio.Queue()
        self._answer: asyncio.Future[tuple[str, str]] | None = None
        self._task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        """Run the app's startup; raises StartupError when it fails (or is fatal in "on")."""
        if self.mode == "off":
            return
        logger.info("Waiting for application startup.")
        loop = asyncio.get_running_loop()
        self.phase = LifespanPhase.STARTING
        self._answer = loop.create_future()
        self._task = loop.create_task(self._run())
        await self._events.put({"type": "lifespan.startup"})
        outcome, message = await self._answer
        if outcome == "complete":
            self.phase = LifespanPhase.STARTED
            logger.info("Application startup complete.")
            return
        if outcome == "unsupported":
            self.phase = LifespanPhase.UNSUPPORTED
            return
        self.phase = LifespanPhase.FAILED
        if message and outcome == "failed":  # a crash's message is in its traceback above
            logger.error(message)
        logger.error("Application startup failed. Exiting.")
        raise StartupError(message or "Application startup failed.")

    async def shutdown(self, timeout: float | None = None) -> None:
        """Run the app's shutdown, bounded by ``timeout`` seconds."""
        if self.phase is not LifespanPhase.STARTED:
            return
        task = self._task
        if task is None or task.done():
            self.phase = LifespanPhase.STOPPED
            return
        logger.info("Waiting for application shutdown.")
        self.phase = LifespanPhase.SHUTTING_DOWN
        self._answer = asyncio.get_running_loop().create_future()
        await self._events.put({"type": "lifespan.shutdown"})
        try:
            outcome, message = await asyncio.wait_for(asyncio.shield(self._answer), timeout)
        except TimeoutError:
            logger.error("Application shutdown timed out after %ss; cancelling it.", timeout)
            task.cancel()
            self.phase = LifespanPhase.FAILED
            return
        if outcome == "complete":
            self.phase = LifespanPhase.STOPPED
            logger.info("Application shutdown complete.")
        else:
            self.phase = LifespanPhase.FAILED
            if message and outcome == "failed":
                logger.error(message)
            logger.error("Application shutdown failed. Exiting.")

    # --- the app's side -------------------------------------------------------------------
    def _settle(self, outcome: str, message: str = "") -> None:
        answer = self._answer
        if answer is not None and not answer.done():
            answer.set_result((outcome, message))

    async def _run(self) -> None:
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": LIFESPAN_SPEC_VERSION},
            "state": self.state,
        }
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                self._settle("failed", "lifespan cancelled")
                raise
            if self.phase is LifespanPhase.STARTING and self.mode == "auto":
                logger.info("ASGI 'lifespan' protocol appears unsupported.")
                self._settle("unsupported")
            else:
                logger.error("Exception in 'lifespan' protocol\n", exc_info=exc)
                self._settle("crashed", f"{type(exc).__name__}: {exc}")
        else:
            if self.phase is LifespanPhase.STARTING:
                if self.mode == "auto":
                    logger.info("ASGI 'lifespan' protocol appears unsupported.")
                    self._settle("unsupported")
                else:
                    self._settle("failed", "The app returned before completing lifespan startup.")
            else:
                self._settle("complete")

    async def _receive(self) -> Message:
        return await self._events.get()

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        phase = self.phase
        awaited = _AWAITED.get(phase)
        if awaited is not None:
            if kind == awaited + ".complete":
                self._settle("complete")
                return
            if kind == awaited + ".failed":
                self._settle("failed", str(message.get("message", "")))
                return
        raise LifespanError(f"Unexpected lifespan message {kind!r} while {phase.value}.")
