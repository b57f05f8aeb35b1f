"""What the master does about an operator's signal or a worker's exit.

The master loop takes the signals its handlers recorded and the children it reaped, and
hands each here: a signal becomes a stop, a resize, a reload or a log reopen; an exit is
judged by :func:`corral.supervisor.exits.judge_exit` and the verdict carried out (logged,
and it may halt the master, abandon a reload or start a crash backoff). Everything acts on
the :class:`~corral.supervisor.master.Master` it is given; nothing here waits.
"""

from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING

from corral.supervisor.exits import STABLE_AFTER_READY, ExitKind, judge_exit
from corral.supervisor.generations import abandon_reload
from corral.supervisor.model import Backoff, MasterState, StopMode, Target
from corral.supervisor.pool import describe_exit, send_signal

if TYPE_CHECKING:
    from corral.supervisor.master import Master
    from corral.supervisor.pool import WorkerHandle

logger = logging.getLogger("corral.error")


# --- signals ---------------------------------------------------------------------------


def handle_signals(master: Master) -> None:
    """Act on every signal recorded since the last turn, oldest first."""
    for signum in master.inbox.take():
        if signum == signal.SIGCHLD:
            continue  # reaping follows right after
        if signum in (signal.SIGTERM, signal.SIGINT):
            if master.state is MasterState.STOPPING:
                logger.info("Second %s: stopping at once", signal.Signals(signum).name)
                stop(master, StopMode.FAST)
            else:
                stop(master, StopMode.GRACEFUL)
        elif signum == signal.SIGQUIT:
            stop(master, StopMode.FAST)
        elif signum == signal.SIGHUP:
            logger.info("Received SIGHUP: reloading workers")
            master.begin_reload()
        elif signum == signal.SIGTTIN:
            resize(master, master.target.workers + 1)
        elif signum == signal.SIGTTOU:
            resize(master, max(1, master.target.workers - 1))
        elif signum == signal.SIGUSR1:
            reopen_logs(master)


def stop(master: Master, mode: StopMode) -> None:
    """Begin (or, for FAST, hurry) the shutdown; the policy then drains or quits workers."""
    if master.state is not MasterState.STOPPING:
        master.set_state(MasterState.STOPPING)
        logger.info(
            "Shutting down: %s stop of %d worker(s)",
            "fast" if mode is StopMode.FAST else "graceful",
            len(master.workers),
        )
        master.emit("stopping")
    if mode is StopMode.FAST or master.target.stop is StopMode.NONE:
        master.target = Target(master.target.workers, master.target.generation, stop=mode)


def resize(master: Master, count: int) -> None:
    if master.state is MasterState.STOPPING or count == master.target.workers:
        return
    logger.info("Changing the number of workers from %d to %d", master.target.workers, count)
    master.target = Target(count, master.target.generation, master.target.reload_from)


def reopen_logs(master: Master) -> None:
    """Reopen the master's log files, then have every worker reopen its own."""
    from corral.logging import reopen_logs as reopen_own_logs

    reopen_own_logs()
    for pid in master.workers:
        send_signal(pid, signal.SIGUSR1)
    logger.info("Reopened log files")


# --- exits -----------------------------------------------------------------------------


def on_exit(master: Master, handle: WorkerHandle, status: int, now: float) -> None:
    """Log a reaped worker's exit and carry out what the verdict on it says."""
    slot_backoff = master.backoffs.get(handle.slot, Backoff())
    verdict = judge_exit(handle, master.target, slot_backoff, master.ever_ready, now)
    master.backoffs[handle.slot] = verdict.backoff
    how = describe_exit(status)
    if verdict.kind is ExitKind.EXPECTED:
        logger.info("Worker %d (pid %d) %s", handle.slot, handle.pid, how)
        return
    logger.error("Worker %d (pid %d) %s (%s)", handle.slot, handle.pid, how, verdict.kind.value)
    master.emit("worker-failed")
    if verdict.halt is not None:
        if master.state is not MasterState.STOPPING:
            logger.error("Application failed to start: no worker ever became ready")
            master.exit_code = verdict.halt
            stop(master, StopMode.FAST)
        return
    if verdict.abandon_reload and master.target.reload_from is not None:
        abandon_reload(master, master.target.reload_from)
        return
    if verdict.delay > 0:
        logger.warning(
            "Worker %d died %d times in a row before serving for %gs; next start in %.1fs",
            handle.slot,
            verdict.backoff.streak,
            STABLE_AFTER_READY,
            verdict.delay,
        )
