"""What supervision is about: the states, the worker view, the pool's target, the limits.

The vocabulary shared by the pure decisions (:mod:`corral.supervisor.policy`,
:mod:`corral.supervisor.exits`), the pool that carries them out and the master loop: the
worker and master state enums with the transitions each allows, what the policy reads of
a worker, the shape the pool should have, the timing limits and the crash backoff.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from corral.config import Config

#: SIGABRT -> SIGKILL grace: faulthandler writes the stacks in milliseconds; a second or
#: two also covers a loaded machine. Longer would only keep a hung worker's sockets busy.
ABORT_GRACE = 3.0
#: Margin added to graceful + lifespan-shutdown timeouts before a draining worker is
#: killed: the worker enforces those timeouts itself; this covers exiting the interpreter.
DRAIN_MARGIN = 5.0
#: After SIGQUIT (fast stop) a worker cancels everything at once; this bounds the wait.
FAST_STOP_GRACE = 3.0


# --- states ----------------------------------------------------------------------------


class WorkerState(Enum):
    """Where one worker process is in its life, as the master sees it."""

    BOOTING = "booting"
    READY = "ready"
    DRAINING = "draining"
    QUITTING = "quitting"
    ABORTING = "aborting"
    KILLED = "killed"


class MasterState(Enum):
    STARTING = "starting"
    RUNNING = "running"
    RELOADING = "reloading"
    STOPPING = "stopping"


class StopMode(Enum):
    NONE = "none"
    GRACEFUL = "graceful"
    FAST = "fast"


class InvalidTransition(RuntimeError):
    """A state change that the lifecycle does not allow."""


class InvalidMasterTransition(RuntimeError):
    """A master state change the lifecycle does not allow."""


#: Allowed worker state changes. Exit (reaping) can happen from any state.
WORKER_TRANSITIONS: dict[WorkerState, frozenset[WorkerState]] = {
    WorkerState.BOOTING: frozenset(
        {
            WorkerState.READY,
            WorkerState.DRAINING,
            WorkerState.QUITTING,
            WorkerState.ABORTING,
            WorkerState.KILLED,
        }
    ),
    WorkerState.READY: frozenset(
        {WorkerState.DRAINING, WorkerState.QUITTING, WorkerState.ABORTING, WorkerState.KILLED}
    ),
    WorkerState.DRAINING: frozenset(
        {WorkerState.QUITTING, WorkerState.ABORTING, WorkerState.KILLED}
    ),
    WorkerState.QUITTING: frozenset({WorkerState.KILLED}),
    WorkerState.ABORTING: frozenset({WorkerState.KILLED}),
    WorkerState.KILLED: frozenset(),
}

#: Allowed master state changes. RELOADING -> RELOADING is a HUP during a reload.
MASTER_TRANSITIONS: dict[MasterState, frozenset[MasterState]] = {
    MasterState.STARTING: frozenset(
        {MasterState.RUNNING, MasterState.RELOADING, MasterState.STOPPING}
    ),
    MasterState.RUNNING: frozenset({MasterState.RELOADING, MasterState.STOPPING}),
    MasterState.RELOADING: frozenset(
        {MasterState.RUNNING, MasterState.RELOADING, MasterState.STOPPING}
    ),
    MasterState.STOPPING: frozenset(),
}


def check_transition(old: WorkerState, new: WorkerState) -> None:
    if new not in WORKER_TRANSITIONS[old]:
        raise InvalidTransition(f"worker cannot go from {old.value} to {new.value}")


def check_master_transition(old: MasterState, new: MasterState) -> None:
    if new not in MASTER_TRANSITIONS[old]:
        raise InvalidMasterTransition(f"master cannot go from {old.value} to {new.value}")


# --- what the policy reads -------------------------------------------------------------


class WorkerView(Protocol):
    """What the policy reads about one live (not yet reaped) worker."""

    @property
    def pid(self) -> int: ...
    @property
    def slot(self) -> int: ...
    @property
    def generation(self) -> int: ...
    @property
    def state(self) -> WorkerState: ...
    @property
    def started_at(self) -> float: ...
    @property
    def last_beat(self) -> float: ...
    @property
    def deadline(self) -> float:
        """Boot deadline (BOOTING), drain deadline (DRAINING/QUITTING), kill time (ABORTING)."""
        ...

    @property
    def booted(self) -> bool:
        """Whether it ever reported READY (an aborted worker may or may not have)."""
        ...

    @property
    def ready_at(self) -> float | None:
        """When it reported READY (None while it never did)."""
        ...

    @property
    def retire_reason(self) -> str | None: ...
    @property
    def fatal_code(self) -> int | None:
        """The exit code a worker announced (FATAL) before failing, if it did."""
        ...

    @property
    def memory_mib(self) -> float | None: ...


def is_live(state: WorkerState) -> bool:
    """Serving or about to serve (not on its way out)."""
    return state in (WorkerState.BOOTING, WorkerState.READY)


def is_booting(worker: WorkerView) -> bool:
    """Still booting, counting a boot being aborted at its timeout (never READY)."""
    return worker.state is WorkerState.BOOTING or (
        worker.state is WorkerState.ABORTING and not worker.booted
    )


@dataclass(frozen=True)
class Limits:
    healthcheck: float = 30.0
    boot: float = 60.0
    #: graceful-shutdown + lifespan-shutdown timeouts + DRAIN_MARGIN
    drain: float = 45.0
    #: When a drain's graceful part is over (graceful timeout + shutdown delay + 1 s): a
    #: worker still over the memory limit then is killed rather than left to shut down.
    graceful: float = 31.0
    memory_mib: float | None = None
    abort_grace: float = ABORT_GRACE
    fast_stop_grace: float = FAST_STOP_GRACE


@dataclass(frozen=True)
class Target:
    """The shape the pool should have."""

    workers: int
    generation: int
    #: The generation being replaced while a reload is in progress.
    reload_from: int | None = None
    stop: StopMode = StopMode.NONE


@dataclass(frozen=True)
class Backoff:
    """One slot's crash backoff: how many of its workers in a row died before READY or
    within a second of it, and the earliest time the slot's next spawn may happen."""

    streak: int = 0
    not_before: float = 0.0


def limits_from(config: Config) -> Limits:
    """The limits a Config sets (drain = graceful + lifespan + shutdown delay + margin)."""
    drain = config.timeout_graceful_shutdown + config.timeout_lifespan_shutdown
    drain += config.timeout_shutdown_delay + DRAIN_MARGIN
    return Limits(
        healthcheck=config.timeout_worker_healthcheck,
        boot=config.timeout_worker_boot,
        drain=drain,
        graceful=config.timeout_graceful_shutdown + config.timeout_shutdown_delay + 1.0,
        memory_mib=None
        if config.limit_worker_memory is None
        else float(config.limit_worker_memory),
    )
