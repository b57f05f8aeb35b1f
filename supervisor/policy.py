"""Supervision decisions as pure functions of worker state and time.

Nothing here touches a process, a signal or a clock: the master passes in what it knows
(worker views, the target shape of the pool, the limits, ``now``) and gets back a list of
actions plus the next moment something will be due. That keeps every rule (timeouts,
backoff, rolling replacement, limits) testable with a fake clock.

:func:`decide` and its steps are here; the states, limits and target shape they read are
in :mod:`corral.supervisor.model`, and the judgement of a worker's exit with its crash
backoff in :mod:`corral.supervisor.exits`. Every one of those names is importable from here.

The rules in one place:

- Slots ``1..N`` of the current generation each want one *holder*: a BOOTING or READY
  worker of that generation and slot that is not marked for retirement. A missing holder
  is spawned, unless that slot's crash backoff is pending. At the initial start every
  slot boots at once (capacity arrives after one import time, and a boot failure halts
  the master after the first); during a reload, while the new generation has no READY
  worker yet only one of it boots at a time (a canary: bad code fails once, not N times,
  while the old generation serves).
- Ready capacity never drops below N: a READY worker that is not a holder (an older
  generation, marked for retirement, or a slot above N after TTOU) is drained only while
  more than N workers are READY. So a reload or a retirement drains the old worker once
  its replacement is READY, and if the replacement never boots the old one keeps serving.
- A READY worker silent for the health-check timeout, or a BOOTING one past its boot
  deadline, gets SIGABRT (stack dump); one still alive after a short grace gets SIGKILL,
  as does a draining worker past its drain deadline.
- Memory over the limit marks a worker for retirement; over 1.5x the limit, or still over
  it when the graceful part of its drain ends, kills it.
- An unexpected exit is judged by :func:`judge_exit`: a boot failure before any worker
  was ever READY halts the master (exit 3); one during a reload abandons the reload;
  a slot whose workers keep dying before READY or within a second of it backs off
  exponentially, while a worker that served is replaced at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from corral.supervisor.exits import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    STABLE_AFTER_READY,
    ExitKind,
    ExitVerdict,
    backoff_delay,
    judge_exit,
)
from corral.supervisor.model import (
    ABORT_GRACE,
    DRAIN_MARGIN,
    FAST_STOP_GRACE,
    WORKER_TRANSITIONS,
    Backoff,
    InvalidTransition,
    Limits,
    StopMode,
    Target,
    WorkerState,
    WorkerView,
    check_transition,
    is_booting,
    is_live,
    limits_from,
)

__all__ = [
    "ABORT_GRACE",
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "DRAIN_MARGIN",
    "FAST_STOP_GRACE",
    "MEMORY_HARD_FACTOR",
    "STABLE_AFTER_READY",
    "WORKER_TRANSITIONS",
    "Abort",
    "Action",
    "Backoff",
    "Decision",
    "Drain",
    "ExitKind",
    "ExitVerdict",
    "InvalidTransition",
    "Kill",
    "Limits",
    "Quit",
    "Retire",
    "Spawn",
    "StopMode",
    "Target",
    "WorkerState",
    "WorkerView",
    "backoff_delay",
    "check_transition",
    "decide",
    "is_holder",
    "is_live",
    "judge_exit",
    "limits_from",
    "reload_complete",
]

#: Memory at this multiple of the limit is killed at once instead of drained.
MEMORY_HARD_FACTOR = 1.5


# --- actions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Spawn:
    slot: int
    generation: int


@dataclass(frozen=True)
class Drain:
    """Stop accepting, finish in-flight work, exit. ``restart`` picks the WebSocket code."""

    pid: int
    reason: str
    restart: bool


@dataclass(frozen=True)
class Quit:
    """Fast stop (SIGQUIT): cancel everything now."""

    pid: int


@dataclass(frozen=True)
class Retire:
    """Mark a worker for replacement (it keeps serving until its replacement is READY)."""

    pid: int
    reason: str


@dataclass(frozen=True)
class Abort:
    """SIGABRT: the worker dumps its threads' stacks and dies."""

    pid: int
    reason: str


@dataclass(frozen=True)
class Kill:
    pid: int
    reason: str


Action = Spawn | Drain | Quit | Retire | Abort | Kill


@dataclass
class Decision:
    actions: list[Action] = field(default_factory=list)
    #: The earliest time a later call may decide something new; None: nothing pending.
    next_deadline: float | None = None

    def due(self, when: float) -> None:
        if self.next_deadline is None or when < self.next_deadline:
            self.next_deadline = when


def is_holder(worker: WorkerView, target: Target) -> bool:
    return (
        is_live(worker.state)
        and worker.generation == target.generation
        and 1 <= worker.slot <= target.workers
        and worker.retire_reason is None
    )


def decide(
    workers: Sequence[WorkerView],
    target: Target,
    limits: Limits,
    backoffs: Mapping[int, Backoff],
    now: float,
) -> Decision:
    """Every action due at ``now``, and when to ask again (``backoffs``: by slot)."""
    decision = Decision()
    _timeouts(workers, limits, now, decision)
    if target.stop is not StopMode.NONE:
        _stopping(workers, target, decision)
        return decision
    _memory(workers, limits, now, decision)
    _spawns(workers, target, backoffs, now, decision)
    _surplus(workers, target, decision)
    return decision


def _timeouts(
    workers: Iterable[WorkerView], limits: Limits, now: float, decision: Decision
) -> None:
    for w in workers:
        if w.state is WorkerState.READY:
            silent_until = w.last_beat + limits.healthcheck
            if now >= silent_until:
                decision.actions.append(Abort(w.pid, f"no heartbeat for {now - w.last_beat:.1f}s"))
            else:
                decision.due(silent_until)
        elif w.state is WorkerState.BOOTING:
            if now >= w.deadline:
                decision.actions.append(Abort(w.pid, f"boot timeout ({limits.boot:g}s)"))
            else:
                decision.due(w.deadline)
        elif w.state in (WorkerState.DRAINING, WorkerState.QUITTING, WorkerState.ABORTING):
            if now >= w.deadline:
                why = {
                    WorkerState.DRAINING: "still running at its drain deadline",
                    WorkerState.QUITTING: "still running after fast stop",
                    WorkerState.ABORTING: "still running after SIGABRT",
                }[w.state]
                decision.actions.append(Kill(w.pid, why))
            else:
                decision.due(w.deadline)


def _acted_on(decision: Decision) -> set[int]:
    return {a.pid for a in decision.actions if not isinstance(a, Spawn)}


def _stopping(workers: Sequence[WorkerView], target: Target, decision: Decision) -> None:
    busy = _acted_on(decision)
    for w in workers:
        if w.pid in busy:
            continue
        if target.stop is StopMode.FAST:
            if w.state in (WorkerState.BOOTING, WorkerState.READY, WorkerState.DRAINING):
                decision.actions.append(Quit(w.pid))
        elif is_live(w.state):
            decision.actions.append(Drain(w.pid, "shutdown", restart=False))


def _memory(workers: Iterable[WorkerView], limits: Limits, now: float, decision: Decision) -> None:
    if limits.memory_mib is None:
        return
    busy = _acted_on(decision)
    for w in workers:
        if w.pid in busy or w.memory_mib is None or w.state is WorkerState.KILLED:
            continue
        figures = f"{w.memory_mib:.0f} MiB > {limits.memory_mib:.0f} MiB"
        if w.memory_mib > limits.memory_mib * MEMORY_HARD_FACTOR and w.state in (
            WorkerState.READY,
            WorkerState.DRAINING,
            WorkerState.BOOTING,
        ):
            decision.actions.append(
                Kill(w.pid, f"over {MEMORY_HARD_FACTOR:g}x the memory limit: {figures}")
            )
        elif (
            w.memory_mib > limits.memory_mib
            and w.state is WorkerState.READY
            and w.retire_reason is None
        ):
            decision.actions.append(Retire(w.pid, f"over memory limit: {figures}"))
        elif w.memory_mib > limits.memory_mib and w.state is WorkerState.DRAINING:
            graceful_end = w.deadline - limits.drain + limits.graceful
            if now >= graceful_end:
                decision.actions.append(
                    Kill(w.pid, f"still over the memory limit after its graceful drain: {figures}")
                )
            else:
                decision.due(graceful_end)


def _spawns(
    workers: Sequence[WorkerView],
    target: Target,
    backoffs: Mapping[int, Backoff],
    now: float,
    decision: Decision,
) -> None:
    retiring_now = {a.pid for a in decision.actions if isinstance(a, Retire | Kill | Abort)}
    held: set[int] = set()
    booting = ready = 0
    for w in workers:
        if w.generation != target.generation:
            continue
        if w.state is WorkerState.READY:
            ready += 1
        elif is_booting(w):
            # A boot, even one being aborted, holds its slot until its exit is judged
            # (which may start that slot's backoff).
            booting += 1
            held.add(w.slot)
        if is_holder(w, target) and w.pid not in retiring_now:
            held.add(w.slot)
    missing = []
    for slot in range(1, target.workers + 1):
        if slot in held:
            continue
        not_before = backoffs[slot].not_before if slot in backoffs else 0.0
        if now < not_before:
            decision.due(not_before)
        else:
            missing.append(slot)
    # Canary during a reload: until the new generation has a READY worker, one at a time.
    canary = target.reload_from is not None and not ready
    budget = max(0, 1 - booting) if canary else len(missing)
    for slot in missing[:budget]:
        decision.actions.append(Spawn(slot, target.generation))


def _surplus(workers: Sequence[WorkerView], target: Target, decision: Decision) -> None:
    retiring_now = {a.pid for a in decision.actions if isinstance(a, Retire)}
    # Workers already on their way out this turn; one just marked for retirement still serves.
    leaving = _acted_on(decision) - retiring_now
    ready_count = sum(1 for w in workers if w.state is WorkerState.READY and w.pid not in leaving)
    extras: list[WorkerView] = []
    for w in workers:
        if w.pid in leaving or not is_live(w.state):
            continue
        if is_holder(w, target) and w.pid not in retiring_now:
            continue
        if w.state is WorkerState.BOOTING:
            # Superseded before it ever served (an older generation, or a slot above N):
            # nothing to drain, stop it now.
            decision.actions.append(Drain(w.pid, "superseded while booting", restart=False))
        else:
            extras.append(w)
    # Older generations first, then retirements, then the highest slots (TTOU).
    extras.sort(key=lambda w: (w.generation, w.retire_reason is None, -w.slot))
    for w in extras:
        if ready_count <= target.workers:
            break
        decision.actions.append(Drain(w.pid, _surplus_reason(w, target), restart=True))
        ready_count -= 1


def _surplus_reason(w: WorkerView, target: Target) -> str:
    if w.retire_reason is not None:
        return w.retire_reason
    if w.generation != target.generation:
        return f"replaced by generation {target.generation}"
    return "pool shrunk"


def reload_complete(workers: Sequence[WorkerView], target: Target) -> bool:
    """Every slot of the target generation has a READY holder."""
    ready_slots = {w.slot for w in workers if is_holder(w, target) and w.state is WorkerState.READY}
    return len(ready_slots) >= target.workers
