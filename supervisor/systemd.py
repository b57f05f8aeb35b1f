"""How corral's processes drive sd_notify: the master (every loop turn and on its events) and
the single serving process (ready and stopping, watchdog on its event loop).

The protocol client itself, with no knowledge of masters or workers, is
:mod:`corral.supervisor.sdnotify`; its public names are re-exported here.
"""

from __future__ import annotations

import os
from collections import deque
from typing import TYPE_CHECKING

from corral.supervisor.model import MasterState, WorkerState
from corral.supervisor.policy import reload_complete
from corral.supervisor.sdnotify import (
    EXTEND_MARGIN,
    EXTEND_RESEND,
    NOTIFY_VARIABLES,
    DatagramTransport,
    Notifier,
    NotifyState,
    NotifyTransitionError,
    extend_timeout,
    monotonic_usec,
    notifier,
    notify_ready,
    notify_reloading,
    notify_stopping,
    socket_address,
    status,
    status_text,
    watchdog_interval,
    watchdog_ping,
)

if TYPE_CHECKING:
    import asyncio

    from corral.config import Config
    from corral.supervisor.master import Master

__all__ = [
    "EXTEND_MARGIN",
    "EXTEND_RESEND",
    "DatagramTransport",
    "MasterNotifier",
    "Notifier",
    "NotifyState",
    "NotifyTransitionError",
    "SingleProcessNotifier",
    "extend_timeout",
    "monotonic_usec",
    "notifier",
    "notify_ready",
    "notify_reloading",
    "notify_stopping",
    "single_process_notifier",
    "socket_address",
    "status",
    "status_text",
    "watchdog_interval",
    "watchdog_ping",
]


class MasterNotifier:
    """Keeps systemd in step with the master: called on master events and every loop turn.

    What to say is derived from the master's state each time, so nothing is missed or sent
    twice whatever order events arrive in: READY=1 once every worker of the current
    generation is READY (at startup and when a reload completes or is abandoned),
    RELOADING=1 when a reload starts, STOPPING=1 when shutdown begins, STATUS= whenever the
    summary changes, EXTEND_TIMEOUT_USEC= while workers boot or drain, WATCHDOG=1 on time.
    """

    #: "Recent" restarts in STATUS= are the unexpected worker exits of the last ten minutes.
    RESTART_WINDOW = 600.0

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        self.failures: deque[float] = deque()
        self._restored = False

    def on_event(self, event: str, master: Master) -> None:
        """A master hook: record failures, then bring systemd up to date at once.

        Before the master re-executes itself in place (``--preload`` reload) systemd hears
        RELOADING=1 from this image, and the notify variables go back into the environment
        so the new image (same pid) can say READY=1 and keep the watchdog fed.
        """
        if event == "reexec":
            if self.notifier.state is NotifyState.READY:
                self.notifier.reloading(self.status_for(master))
            os.environ.update(self.notifier.saved_environ)
            self._restored = True
            return
        if self._restored:  # the exec failed and this image carries on
            self._restored = False
            for name in NOTIFY_VARIABLES:
                os.environ.pop(name, None)
        if event == "worker-failed":
            self.failures.append(master.clock())
        self.update(master)

    def update(self, master: Master) -> float | None:
        """Send whatever is due; returns when the master must call again (or None)."""
        now = master.clock()
        while self.failures and self.failures[0] < now - self.RESTART_WINDOW:
            self.failures.popleft()
        workers = list(master.workers.values())
        text = self.status_for(master)
        state = master.state
        notifier = self.notifier
        if state is MasterState.STOPPING:
            notifier.stopping(text)
        elif state is MasterState.RELOADING and notifier.state is NotifyState.READY:
            notifier.reloading(text)
        elif (
            state is MasterState.RUNNING
            and notifier.state is not NotifyState.READY
            and reload_complete(workers, master.target)
        ):
            notifier.ready(text)
        notifier.status(text)
        if state is MasterState.STOPPING:
            leaving = (WorkerState.DRAINING, WorkerState.QUITTING, WorkerState.ABORTING)
            deadlines = [w.deadline for w in workers if w.state in leaving]
        else:
            deadlines = [w.deadline for w in workers if w.state is WorkerState.BOOTING]
        notifier.extend_until(max(deadlines) if deadlines else None)
        notifier.tick()
        return notifier.next_deadline()

    def status_for(self, master: Master) -> str:
        if master.state is MasterState.STOPPING:
            left = len(master.workers)
            return f"Stopping: {left} worker{'s' if left != 1 else ''} still running"
        target = master.target
        ready = sum(
            1
            for w in master.workers.values()
            if w.state is WorkerState.READY and w.generation == target.generation
        )
        text = status_text(ready, target.workers, target.generation, len(self.failures))
        return f"Reloading: {text}" if master.state is MasterState.RELOADING else text


class SingleProcessNotifier:
    """sd_notify for single-process mode, called by the server with "booting", "ready" and
    "stopping".

    "ready" comes from inside the running event loop once lifespan startup is done and the
    sockets are served; the watchdog pings are then scheduled on that same loop, so a loop
    blocked by the application stops feeding the watchdog and systemd restarts the service.
    While booting (the app import and lifespan startup, bounded by ``--timeout-worker-boot``)
    and while stopping (shutdown delay + graceful drain + lifespan shutdown), systemd's own
    start/stop timeouts are extended to corral's bounds, re-sent while the stop goes on.
    """

    def __init__(
        self, notifier: Notifier, boot_allowance: float = 0.0, stop_allowance: float = 0.0
    ) -> None:
        self.notifier = notifier
        self.boot_allowance = boot_allowance
        self.stop_allowance = stop_allowance
        self._timer: asyncio.TimerHandle | None = None
        self._stop_deadline: float | None = None

    def __call__(self, event: str) -> None:
        notifier = self.notifier
        if event == "booting":
            notifier.extend_until(notifier.now() + self.boot_allowance)
        elif event == "ready":
            notifier.ready("Serving (single process)")
            if notifier.enabled and notifier.watchdog is not None:
                self._ping()
        elif event == "stopping":
            notifier.stopping("Stopping")
            if self._stop_deadline is None:
                self._stop_deadline = notifier.now() + self.stop_allowance
                self._extend()

    def _ping(self) -> None:
        import asyncio

        self.notifier.tick()
        interval = self.notifier.watchdog
        if interval is not None:
            self._timer = asyncio.get_running_loop().call_later(interval, self._ping)

    def _extend(self) -> None:
        """Re-send the stop extension on the serving loop until corral's own bound passes."""
        import asyncio

        deadline = self._stop_deadline
        if deadline is None or not self.notifier.enabled:
            return
        self.notifier.extend_until(deadline)
        if self.notifier.now() < deadline:
            asyncio.get_running_loop().call_later(EXTEND_RESEND, self._extend)


def single_process_notifier(config: Config) -> SingleProcessNotifier:
    """The ``notify`` callback ``serve_config`` gives ``run_single`` (reads the environment)."""
    stop = (
        config.timeout_shutdown_delay
        + config.timeout_graceful_shutdown
        + config.timeout_lifespan_shutdown
    )
    return SingleProcessNotifier(Notifier.from_environ(), config.timeout_worker_boot, stop)
