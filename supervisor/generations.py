"""Generations of workers: rolling reloads, their end, and the --preload re-exec.

A reload (SIGHUP or a watched file changing) makes a new generation the target; the
policy then replaces workers one READY replacement at a time. Here are the master's steps
around that: starting a reload, noticing it completed (or that startup did), abandoning
it when the new generation fails to boot, and, under ``--preload``, re-executing the
master in place and adopting the previous image's workers.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from corral.supervisor.model import MasterState, Target, WorkerState
from corral.supervisor.policy import reload_complete
from corral.supervisor.pool import reexec_in_place

if TYPE_CHECKING:
    from corral.supervisor.master import Master
    from corral.supervisor.pool import WorkerHandle

logger = logging.getLogger("corral.error")


def begin_reload(master: Master) -> None:
    """Start a ready-gated rolling replacement with a new generation.

    With --preload the app lives in the master's own memory, so new code needs a new
    master: it re-executes itself in place (same pid) and adopts the old workers.
    """
    if master.state is MasterState.STOPPING:
        return
    if master.config.preload:
        reexec(master)  # returns only if the exec failed
    generation = master.next_generation
    master.next_generation += 1
    master.set_state(MasterState.RELOADING)
    # A HUP during a reload supersedes the generation still booting; what must keep
    # serving if the newest one fails is the generation that served before either.
    serving = master.target.reload_from
    if serving is None:
        serving = master.target.generation
    master.target = Target(master.target.workers, generation, reload_from=serving)
    master.emit("reloading")


def check_progress(master: Master) -> None:
    """RUNNING once every slot of the target generation is READY (startup or a reload)."""
    if master.state not in (MasterState.STARTING, MasterState.RELOADING):
        return
    if reload_complete(list(master.workers.values()), master.target):
        if master.state is MasterState.RELOADING:
            logger.info(
                "Reload complete: generation %d serving with %d worker(s)",
                master.target.generation,
                master.target.workers,
            )
        master.target = Target(master.target.workers, master.target.generation)
        master.set_state(MasterState.RUNNING)
        master.emit("ready")


def abandon_reload(master: Master, old: int) -> None:
    """The new generation failed to boot: generation ``old`` keeps serving."""
    logger.error(
        "Generation %d failed to boot; generation %d keeps serving"
        " (fix the code and send SIGHUP to retry)",
        master.target.generation,
        old,
    )
    master.target = Target(master.target.workers, old)
    master.set_state(MasterState.RUNNING)
    master.emit("reload-failed")


# --- re-exec in place (--preload reload) -----------------------------------------------


def adopt(master: Master, handles: list[WorkerHandle], replace: bool = True) -> None:
    """Take over the previous master image's workers and (normally) replace them.

    ``replace=False`` when the new image could not load the app: the adopted workers
    stay the serving generation, and a later SIGHUP tries again.
    """
    if not handles:
        return
    old = max(h.generation for h in handles)
    table = master.load_table
    for handle in handles:
        handle.generation = old
        master.workers[handle.pid] = handle
        if handle.seat is not None and table is not None:
            table.take(handle.seat)  # still publishing there: balanced with the new ones
    master.ever_ready = True
    master.next_generation = old + 2
    if not replace:
        logger.error(
            "The new code failed to load; generation %d keeps serving"
            " (fix the code and send SIGHUP to retry)",
            old,
        )
        master.target = Target(master.target.workers, old)
        return
    master.set_state(MasterState.RELOADING)
    master.target = Target(master.target.workers, old + 1, reload_from=old)
    logger.info(
        "Adopted %d worker(s) of generation %d from before the re-exec; replacing them",
        len(handles),
        old,
    )


def reexec(master: Master) -> None:
    """Replace this process image with a fresh corral, same pid, same sockets."""
    logger.info("Re-executing the master in place to load the new code (--preload)")
    master.emit("reexec")
    ready = [h for h in master.workers.values() if h.state is WorkerState.READY]
    try:
        table_fd = master.load_table.fd if master.load_table is not None else None
        reexec_in_place(master.listeners, ready, master.target.workers, table_fd)
    except OSError as exc:
        logger.error("Re-executing the master failed (%s); reloading workers only", exc)
