"""The master: forks workers that share the listening sockets and supervises them.

It is synchronous and single-threaded: no event loop, no threads. Signal handlers only
record the signal; ``signal.set_wakeup_fd`` makes the one ``selectors`` loop wake up, and
that loop also reads every worker's channel. Its timeout is the next deadline the policy
reports (a heartbeat timeout, a boot or drain deadline, the end of a backoff, the next
memory sample or file-watch poll), so it never sleeps to poll.

All decisions come from :mod:`corral.supervisor.policy`; this module carries them out.
What a signal or a worker's exit leads to is in :mod:`corral.supervisor.events`, the
steps of a reload and the --preload re-exec in :mod:`corral.supervisor.generations`.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from corral.errors import CorralError, ExitCode
from corral.logging import TRACE_LEVEL
from corral.supervisor import events, generations, memory
from corral.supervisor.model import (
    InvalidMasterTransition,
    MasterState,
    check_master_transition,
)
from corral.supervisor.policy import (
    Action,
    Backoff,
    Spawn,
    Target,
    decide,
    limits_from,
)
from corral.supervisor.pool import (
    MASTER_SIGNALS,
    WorkerHandle,
    adopted_table,
    adopted_target,
    adopted_workers,
    app_title,
    carry_out,
    describe_exit,
    fork_worker,
    reap,
    set_title,
)
from corral.supervisor.signals import SignalInbox
from corral.supervisor.systemd import MasterNotifier, Notifier
from corral.worker import bootlog
from corral.worker.balance import LoadTable
from corral.worker.channel import ChannelError

if TYPE_CHECKING:
    from corral.config import Config
    from corral.listeners import Listener
    from corral.supervisor.reload import Watcher

__all__ = ["InvalidMasterTransition", "Master", "MasterState", "WorkerEntry", "run_master"]

logger = logging.getLogger("corral.error")


#: Entry point run in a forked worker: (channel, slot, generation) -> exit code.
WorkerEntry = Callable[[socket.socket, int, int], int]


class Master:
    """Owns the worker pool; :meth:`run` returns the process exit code."""

    def __init__(
        self,
        config: Config,
        listeners: list[Listener],
        entry: WorkerEntry,
        *,
        watcher: Watcher | None = None,
        clock: Callable[[], float] = time.monotonic,
        load_table: LoadTable | None = None,
    ) -> None:
        self.config = config
        self.listeners = listeners
        self.entry = entry
        self.watcher = watcher
        self.clock = clock
        self.state = MasterState.STARTING
        self.workers: dict[int, WorkerHandle] = {}
        self.target = Target(workers=config.workers or 1, generation=1)
        self.next_generation = 2
        #: Crash backoff by slot (see :func:`corral.supervisor.exits.judge_exit`).
        self.backoffs: dict[int, Backoff] = {}
        self.limits = limits_from(config)
        self.ever_ready = False
        self.exit_code = ExitCode.OK
        self.inbox = SignalInbox(MASTER_SIGNALS)
        self.selector = selectors.DefaultSelector()
        self._next_sample = 0.0
        self._next_watch = 0.0
        #: Hooks for sd_notify and the like: called with (event, master).
        self.hooks: list[Callable[[str, Master], None]] = []
        #: systemd notifications (a no-op without NOTIFY_SOCKET); set by run_master.
        self.notifier: MasterNotifier | None = None
        #: Shared memory where workers publish their connection counts (made before any
        #: fork); each worker's seat in it is on its handle, freed when it is reaped.
        self.load_table = load_table
        #: Read end of the initial start's one-traceback token (see corral.worker.bootlog);
        #: closed once a worker is READY, so later workers log their failures as usual.
        self.boot_token: int | None = None

    # --- lifecycle -------------------------------------------------------------------

    def set_state(self, new: MasterState) -> None:
        check_master_transition(self.state, new)
        self.state = new

    def emit(self, event: str) -> None:
        """Tell every hook (sd_notify and the like) that ``event`` happened."""
        for hook in self.hooks:
            try:
                hook(event, self)
            except Exception:
                logger.exception("master hook failed on %s", event)

    def begin_reload(self) -> None:
        """Start a ready-gated rolling replacement (see :mod:`corral.supervisor.generations`)."""
        generations.begin_reload(self)

    def adopt(self, handles: list[WorkerHandle], replace: bool = True) -> None:
        """Take over the previous master image's workers (after a --preload re-exec)."""
        generations.adopt(self, handles, replace)

    def _close_in_child(self) -> None:
        """In a fresh worker: drop every fd that belongs to the master or to siblings.

        A sibling's channel kept open here would hide that worker's EOF from the master
        and, worse, keep this worker's own EOF from ever arriving if the master died.
        """
        self.selector.close()
        self.inbox.close()
        for handle in self.workers.values():
            handle.close_channel()

    def run(self) -> ExitCode:
        self.inbox.install()
        self.selector.register(self.inbox.fileno, selectors.EVENT_READ, None)
        for handle in self.workers.values():  # adopted after a re-exec
            if handle.channel is not None:
                self.selector.register(handle.channel, selectors.EVENT_READ, handle)
        set_title(f"corral: master [{app_title(self.config.app)}]")
        if not self.ever_ready:
            self.boot_token = bootlog.make_token()
        try:
            self._loop()
        finally:
            self._drop_boot_token()
            self.inbox.restore()
            self.selector.close()
            self.inbox.close()
        return self.exit_code

    def _loop(self) -> None:
        while True:
            now = self.clock()
            events.handle_signals(self)
            self._reap(now)
            if self.state is MasterState.STOPPING and not self.workers:
                return
            deadline = self._supervise(now)
            if self.state is MasterState.STOPPING and not self.workers:
                return
            timeout = None if deadline is None else max(0.0, deadline - self.clock())
            for key, _ in self.selector.select(timeout):
                if key.data is not None:
                    self._read_channel(key.data)

    # --- workers ---------------------------------------------------------------------

    def _reap(self, now: float) -> None:
        for pid, status in reap():
            handle = self.workers.pop(pid, None)
            if handle is None:
                logger.debug("Reaped process %d (not a worker): %s", pid, describe_exit(status))
                continue
            if handle.seat is not None and self.load_table is not None:
                self.load_table.release(handle.seat)
            if handle.channel is not None:
                self._read_channel(handle)  # last words (FATAL) may still be queued
                self._unregister(handle)
            events.on_exit(self, handle, status, now)

    def _unregister(self, handle: WorkerHandle) -> None:
        if handle.channel is not None:
            try:
                self.selector.unregister(handle.channel)
            except (KeyError, ValueError):
                pass
            handle.close_channel()

    def _read_channel(self, handle: WorkerHandle) -> None:
        try:
            messages = handle.receive()
        except ChannelError as exc:
            logger.error("%s sent garbage on its channel (%s)", handle.describe(), exc)
            messages = None
        if messages is None:
            self._unregister(handle)  # EOF: the process is exiting; SIGCHLD follows
            return
        now = self.clock()
        for message in messages:
            if handle.note(message, now):
                self.ever_ready = True
                self._drop_boot_token()

    def _drop_boot_token(self) -> None:
        if self.boot_token is not None:
            os.close(self.boot_token)
            self.boot_token = None

    def _supervise(self, now: float) -> float | None:
        """Apply the policy until it has nothing more to do; returns the next wake-up."""
        self._sample_memory(now)
        self._watch_files(now)
        decision = decide(list(self.workers.values()), self.target, self.limits, self.backoffs, now)
        for _ in range(4):
            if not decision.actions:
                break
            for action in decision.actions:
                self._apply(action, now)
            decision = decide(
                list(self.workers.values()), self.target, self.limits, self.backoffs, now
            )
        generations.check_progress(self)
        deadlines = [decision.next_deadline]
        if self.limits.memory_mib is not None and self.workers:
            deadlines.append(self._next_sample)
        if self.watcher is not None and self.state is not MasterState.STOPPING:
            deadlines.append(self._next_watch)
        if self.notifier is not None:
            deadlines.append(self.notifier.update(self))
        known = [d for d in deadlines if d is not None]
        return min(known) if known else None

    def _apply(self, action: Action, now: float) -> None:
        if isinstance(action, Spawn):
            self._spawn(action.slot, action.generation, now)
            return
        handle = self.workers.get(action.pid)
        if handle is not None:
            carry_out(handle, action, self.limits, now)

    def _spawn(self, slot: int, generation: int, now: float) -> None:
        table = self.load_table
        seat = table.claim() if table is not None else None
        token = self.boot_token

        def enter(sock: socket.socket) -> int:  # in the child
            if table is not None:
                table.sit(seat)  # this worker's seat
            if token is None:
                return self.entry(sock, slot, generation)
            bootlog.hold(token)  # one traceback, not N, if the initial start fails
            code = 1
            try:
                code = self.entry(sock, slot, generation)
            finally:
                # No-ops once the worker was READY; before that, a failure writes its lines
                # only if it is the first sibling to fail.
                if code != 0:
                    bootlog.failed()
                else:
                    bootlog.ready()
            return code

        try:
            handle = fork_worker(
                slot,
                generation,
                now,
                self.limits.boot,
                self._close_in_child,
                enter,
                title=f"corral: worker {slot} [{app_title(self.config.app)}]",
            )
        except BaseException:
            if table is not None and seat is not None:
                table.release(seat)
            raise
        handle.seat = seat
        self.workers[handle.pid] = handle
        if handle.channel is not None:
            self.selector.register(handle.channel, selectors.EVENT_READ, handle)
        logger.info("Started worker %d (pid %d, generation %d)", slot, handle.pid, generation)

    def _sample_memory(self, now: float) -> None:
        if self.limits.memory_mib is None or now < self._next_sample:
            return
        self._next_sample = now + memory.SAMPLE_INTERVAL
        for pid, mib in memory.sample(list(self.workers)).items():
            handle = self.workers.get(pid)
            if handle is not None:
                handle.memory_mib = mib
                logger.log(TRACE_LEVEL, "%s uses %.1f MiB (USS)", handle.describe(), mib)

    def _watch_files(self, now: float) -> None:
        if self.watcher is None or now < self._next_watch:
            return
        self._next_watch = now + self.watcher.interval
        if self.state is MasterState.STOPPING:
            return
        changed = self.watcher.check()
        if changed:
            names = ", ".join(str(p) for p in changed[:3])
            more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
            logger.warning("Detected changes in %s%s. Reloading...", names, more)
            self.begin_reload()


def _worker_entry(
    config: Config, listeners: list[Listener], app: Any, table: LoadTable | None = None
) -> WorkerEntry:
    def entry(sock: socket.socket, slot: int, generation: int) -> int:
        from corral.worker.supervised import run_worker

        return int(run_worker(config, listeners, sock, slot, generation, app, table))

    return entry


def _warn_about_threads() -> None:
    """A preloaded app that started threads makes every fork copy a half-locked process."""
    import threading

    extra = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if extra:
        logger.warning(
            "The app started %d thread(s) at import (%s); with --preload they are not copied"
            " into workers, and locks they hold may be copied locked. Start them in the"
            " lifespan startup instead.",
            len(extra),
            ", ".join(extra[:3]),
        )


def run_master(config: Config, listeners: list[Listener]) -> ExitCode:
    """Supervise ``config.workers`` workers on ``listeners`` until stopped."""
    from corral.logging import banner_lines

    adopted = adopted_workers(time.monotonic())
    adopted_count = adopted_target()
    loaded = True
    app: Any = None
    if config.preload:
        from corral.loading import load_app

        try:
            app = load_app(config)
        except CorralError as exc:
            logger.error("%s", exc)
            if not adopted:
                return exc.exit_code
            # Re-executed with broken code: the adopted workers keep serving. Should one
            # die, its replacement imports the app itself (app is None), as without preload.
            loaded = False
        else:
            _warn_about_threads()
    watcher = None
    if config.reload:
        from corral.supervisor.reload import Watcher

        watcher = Watcher.from_config(config)
    for line in banner_lines(listeners):
        logger.info("%s", line)
    logger.info("Started parent process [%d]", os.getpid())
    # Before the first fork, so every worker shares it; after a re-exec, the same table.
    table = adopted_table() or LoadTable.create()
    master = Master(
        config,
        listeners,
        _worker_entry(config, listeners, app, table),
        watcher=watcher,
        load_table=table,
    )
    if adopted_count is not None:  # a re-exec keeps what TTIN/TTOU made of --workers
        master.target = Target(adopted_count, master.target.generation)
    master.notifier = MasterNotifier(Notifier.from_environ())
    master.hooks.append(master.notifier.on_event)
    master.adopt(adopted, replace=loaded)
    code = master.run()
    logger.info("Stopping parent process [%d]", os.getpid())
    return code
