"""Worker processes as the master sees them: handles, forking, reaping, exit descriptions.

A worker is an ``os.fork()`` of the master (never multiprocessing): it inherits the
listening sockets and, under ``--preload``, the already-imported app, copy-on-write.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from corral.supervisor.policy import (
    Abort,
    Action,
    Drain,
    Kill,
    Limits,
    Quit,
    Retire,
    WorkerState,
    check_transition,
)
from corral.worker import channel as wire
from corral.worker.channel import Decoder, Kind, Message

if TYPE_CHECKING:
    from corral.listeners import Listener
    from corral.worker.balance import LoadTable

logger = logging.getLogger("corral.error")

#: Signals the master handles; a forked worker resets them before doing anything else.
MASTER_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGUSR1,
    signal.SIGCHLD,
)


@dataclass(eq=False)
class WorkerHandle:
    """One live worker process (removed from the pool once reaped)."""

    pid: int
    slot: int
    generation: int
    #: The master's end of the worker's socketpair; None once it hit EOF.
    channel: socket.socket | None
    started_at: float
    deadline: float
    last_beat: float
    state: WorkerState = WorkerState.BOOTING
    retire_reason: str | None = None
    booted: bool = False
    ready_at: float | None = None
    memory_mib: float | None = None
    #: Its seat in the master's load table (freed when it is reaped).
    seat: int | None = None
    #: Exit code announced with FATAL before a boot failure.
    fatal_code: int | None = None
    decoder: Decoder = field(default_factory=Decoder)

    def transition(self, new: WorkerState, deadline: float | None = None) -> None:
        """Move to ``new`` (InvalidTransition if the lifecycle forbids it)."""
        check_transition(self.state, new)
        self.state = new
        if deadline is not None:
            self.deadline = deadline

    def receive(self) -> list[Message] | None:
        """Messages that arrived on the channel; None at EOF (ChannelError on garbage)."""
        if self.channel is None:
            return None
        return self.decoder.receive(self.channel)

    def note(self, message: Message, now: float) -> bool:
        """Apply one channel message; True when it is this worker's READY."""
        if message.kind is Kind.BEAT:
            self.last_beat = now
        elif message.kind is Kind.READY and self.state is WorkerState.BOOTING:
            self.transition(WorkerState.READY)
            self.booted = True
            self.ready_at = self.last_beat = now
            logger.info(
                "Worker %d (pid %d, generation %d) ready", self.slot, self.pid, self.generation
            )
            return True
        elif message.kind is Kind.RETIRING:
            if self.retire_reason is None and self.state is WorkerState.READY:
                self.retire_reason = message.arg
                logger.info("%s reached its %s limit, replacing", self.describe(), message.arg)
        elif message.kind is Kind.FATAL:
            self.fatal_code = message.number
        return False

    def send(self, data: bytes) -> bool:
        """Send a command on the channel; False if it is closed or broken."""
        if self.channel is None:
            return False
        try:
            self.channel.send(data)
        except OSError:
            return False
        return True

    def describe(self) -> str:
        return f"worker {self.slot} (pid {self.pid})"

    def close_channel(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None


def app_title(app: object) -> str:
    """What the process titles show for APP: the import string, or the object's name."""
    if isinstance(app, str):
        return app
    return getattr(app, "__qualname__", None) or type(app).__name__


def set_title(title: str) -> None:
    """setproctitle when available (it is a dependency; tolerate a broken build)."""
    try:
        from setproctitle import setproctitle
    except ImportError:  # pragma: no cover - installed with corral
        return
    setproctitle(title)


def fork_worker(
    slot: int,
    generation: int,
    now: float,
    boot_timeout: float,
    close_in_child: Callable[[], None],
    entry: Callable[[socket.socket], int],
    title: str = "",
) -> WorkerHandle:
    """Fork one worker. In the child: close the master's private fds, reset signals, run
    ``entry(channel)`` and ``os._exit`` with its result, never returning into the master."""
    master_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    sys.stdout.flush()
    sys.stderr.flush()
    # The master may signal the new pid at once (a stop right after a spawn). Until the child
    # has reset the handlers it inherited, such a signal would only be recorded in the
    # child's copy of the master and lost; blocked, it stays pending until the reset.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, MASTER_SIGNALS)
    try:
        pid = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        raise
    if pid == 0:  # pragma: no cover - runs in the child; covered by the integration tests
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            for signum in MASTER_SIGNALS:
                signal.signal(signum, signal.SIG_DFL)
            # Ctrl+C reaches the whole process group; the master coordinates the stop, so
            # a worker ignores SIGINT from its first instruction on.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            master_end.close()
            close_in_child()
            if title:
                set_title(title)
            code = entry(worker_end)
        except BaseException:
            logger.exception("Worker crashed")
        finally:
            try:
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    worker_end.close()
    master_end.setblocking(False)
    return WorkerHandle(
        pid=pid,
        slot=slot,
        generation=generation,
        channel=master_end,
        started_at=now,
        deadline=now + boot_timeout,
        last_beat=now,
    )


def carry_out(handle: WorkerHandle, action: Action, limits: Limits, now: float) -> None:
    """Do what the policy decided to one worker: mark, drain, quit, abort or kill it."""
    if isinstance(action, Retire):
        handle.retire_reason = action.reason
        logger.warning("%s %s, replacing", handle.describe(), action.reason)
    elif isinstance(action, Drain):
        logger.info("Draining %s: %s", handle.describe(), action.reason)
        handle.transition(WorkerState.DRAINING, now + limits.drain)
        # A restart drain goes over the channel (WebSockets get 1012); a stop, or a
        # channel already gone, is SIGTERM (1001).
        if not (action.restart and handle.send(wire.drain(restart=True))):
            send_signal(handle.pid, signal.SIGTERM)
    elif isinstance(action, Quit):
        handle.transition(WorkerState.QUITTING, now + limits.fast_stop_grace)
        send_signal(handle.pid, signal.SIGQUIT)
    elif isinstance(action, Abort):
        logger.error(
            "%s %s: sending SIGABRT (its stack dump follows)", handle.describe(), action.reason
        )
        handle.transition(WorkerState.ABORTING, now + limits.abort_grace)
        send_signal(handle.pid, signal.SIGABRT)
    elif isinstance(action, Kill):
        logger.error("Killing %s: %s", handle.describe(), action.reason)
        handle.transition(WorkerState.KILLED)
        send_signal(handle.pid, signal.SIGKILL)


def reap() -> Iterator[tuple[int, int]]:
    """(pid, wait status) for every child that has exited, without blocking.

    waitpid(-1) also reaps children the master never started: as PID 1 in a container,
    orphans are re-parented to it and would otherwise stay zombies.
    """
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for safety
            continue
        if pid == 0:
            return
        yield pid, status


def describe_exit(status: int) -> str:
    """'exited with code 3', 'killed by SIGKILL', 'exited cleanly'."""
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return "exited cleanly" if code == 0 else f"exited with code {code}"


def send_signal(pid: int, signum: int) -> bool:
    """Signal a child; False when it is already gone (exited, not yet reaped)."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


# --- handing workers to a re-executed master (--preload reload) ---------------------

#: Where passed worker channels are parked during a re-exec, above any fd likely in use.
_REEXEC_FD_FLOOR = 100
_REEXEC_VAR = "CORRAL_REEXEC_WORKERS"
#: The worker count in force (TTIN/TTOU may have changed it from --workers).
_REEXEC_TARGET_VAR = "CORRAL_REEXEC_TARGET"
#: The fd of the load table's memfd, so adopted and new workers balance together.
_REEXEC_TABLE_VAR = "CORRAL_REEXEC_TABLE"


def adopted_target(environ: dict[str, str] | None = None) -> int | None:
    """The worker count a previous master image handed over (once), if any."""
    env = os.environ if environ is None else environ
    raw = env.pop(_REEXEC_TARGET_VAR, "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else None


def adopted_table(environ: dict[str, str] | None = None) -> LoadTable | None:
    """The load table a previous master image handed over (once), if any."""
    from corral.worker.balance import LoadTable

    env = os.environ if environ is None else environ
    raw = env.pop(_REEXEC_TABLE_VAR, "")
    if not raw.isdigit():
        return None
    fd = int(raw)
    os.set_inheritable(fd, False)
    return LoadTable.adopt(fd)


def adopted_workers(now: float, environ: dict[str, str] | None = None) -> list[WorkerHandle]:
    """Workers a previous master image handed over through the environment (once)."""
    env = os.environ if environ is None else environ
    raw = env.pop(_REEXEC_VAR, "")
    handles = []
    for item in filter(None, raw.split(",")):
        pid, slot, generation, fd, seat = (int(part) for part in item.split(":"))
        sock = socket.socket(fileno=fd)
        sock.set_inheritable(False)
        sock.setblocking(False)
        handles.append(
            WorkerHandle(
                pid=pid,
                slot=slot,
                generation=generation,
                channel=sock,
                started_at=now,
                deadline=now,
                last_beat=now,
                state=WorkerState.READY,
                booted=True,
                ready_at=0.0,  # served under the previous image: long proven
                seat=seat or None,
            )
        )
    return handles


def reexec_in_place(
    listeners: list[Listener],
    workers: list[WorkerHandle],
    target_workers: int,
    table_fd: int | None = None,
) -> None:
    """Replace this process image with a fresh corral (same pid, same sockets).

    The listening sockets go to fds 3.. as in socket activation (LISTEN_PID is our own
    pid, so serve_config adopts them instead of binding); each worker's channel fd,
    identity and load-table seat go in CORRAL_REEXEC_WORKERS, the worker count in force
    (TTIN/TTOU) in CORRAL_REEXEC_TARGET, the load table's fd in CORRAL_REEXEC_TABLE.
    Signals stay blocked across the exec so a
    SIGTERM or SIGHUP that arrives meanwhile waits for the new master's handlers
    instead of killing it.
    """
    import fcntl

    from corral.listeners import reexec_name

    signal.pthread_sigmask(signal.SIG_BLOCK, MASTER_SIGNALS)
    try:
        # Move everything we pass out of the way first, then into place at 3, 4, ...
        high = [
            fcntl.fcntl(item.sock.fileno(), fcntl.F_DUPFD_CLOEXEC, _REEXEC_FD_FLOOR)
            for item in listeners
        ]
        passed = []
        for handle in workers:
            if handle.channel is None:
                continue
            fd = fcntl.fcntl(handle.channel.fileno(), fcntl.F_DUPFD, _REEXEC_FD_FLOOR)
            passed.append(f"{handle.pid}:{handle.slot}:{handle.generation}:{fd}:{handle.seat or 0}")
        if table_fd is not None:
            os.environ[_REEXEC_TABLE_VAR] = str(
                fcntl.fcntl(table_fd, fcntl.F_DUPFD, _REEXEC_FD_FLOOR)
            )
        for index, fd in enumerate(high):
            os.dup2(fd, 3 + index, inheritable=True)
        os.environ.update(
            {
                "LISTEN_PID": str(os.getpid()),
                "LISTEN_FDS": str(len(high)),
                # Only sockets corral opened itself are its own after the exec (their UNIX
                # socket files removed at the final stop); systemd's and --fd's stay theirs.
                "LISTEN_FDNAMES": ":".join(reexec_name(item) for item in listeners),
                _REEXEC_VAR: ",".join(passed),
                _REEXEC_TARGET_VAR: str(target_workers),
            }
        )
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    except OSError:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, MASTER_SIGNALS)
        raise
