"""Supervision policy: pure decisions checked with a fake clock and fake workers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from corral.errors import ExitCode
from corral.supervisor.policy import (
    Abort,
    Backoff,
    Drain,
    ExitKind,
    InvalidTransition,
    Kill,
    Limits,
    Quit,
    Retire,
    Spawn,
    StopMode,
    Target,
    WorkerState,
    backoff_delay,
    check_transition,
    decide,
    judge_exit,
    reload_complete,
)
from hypothesis import given, settings
from hypothesis import strategies as st

LIMITS = Limits(healthcheck=10.0, boot=30.0, drain=40.0, memory_mib=100.0)
B, R, D = WorkerState.BOOTING, WorkerState.READY, WorkerState.DRAINING


@dataclass
class FakeWorker:
    pid: int
    slot: int
    generation: int = 1
    state: WorkerState = R
    started_at: float = 0.0
    last_beat: float = 100.0
    deadline: float = 130.0
    retire_reason: str | None = None
    memory_mib: float | None = None
    booted: bool = True
    fatal_code: int | None = None
    ready_at: float | None = 0.0


def pool(n: int, generation: int = 1, state: WorkerState = R) -> list[FakeWorker]:
    return [
        FakeWorker(pid=100 * generation + s, slot=s, generation=generation, state=state)
        for s in range(1, n + 1)
    ]


def kinds(actions: Sequence[object]) -> list[str]:
    return [type(a).__name__ for a in actions]


def test_initial_start_boots_every_slot_at_once() -> None:
    """At the initial start all N boot together: full capacity after one import time."""
    d = decide([], Target(workers=3, generation=1), LIMITS, {}, now=100.0)
    assert d.actions == [Spawn(1, 1), Spawn(2, 1), Spawn(3, 1)]
    booting = [FakeWorker(pid=1, slot=1, state=B, booted=False, ready_at=None)]
    d = decide(booting, Target(3, 1), LIMITS, {}, now=101.0)
    assert d.actions == [Spawn(2, 1), Spawn(3, 1)]


def test_reload_boots_one_canary_at_a_time() -> None:
    """During a reload, until one new worker is READY, only one of it boots."""
    target = Target(workers=3, generation=2, reload_from=1)
    old = pool(3)
    assert decide(old, target, LIMITS, {}, now=100.0).actions == [Spawn(1, 2)]
    canary = FakeWorker(pid=201, slot=1, generation=2, state=B, booted=False, ready_at=None)
    assert decide([*old, canary], target, LIMITS, {}, now=101.0).actions == []
    canary.state = R
    d = decide([*old, canary], target, LIMITS, {}, now=102.0)
    assert [a for a in d.actions if isinstance(a, Spawn)] == [Spawn(2, 2), Spawn(3, 2)]


def test_full_healthy_pool_does_nothing_and_wakes_for_heartbeat() -> None:
    """A full, beating pool needs no action; the next deadline is the earliest beat timeout."""
    workers = pool(2)
    workers[1].last_beat = 95.0
    d = decide(workers, Target(2, 1), LIMITS, {}, now=100.0)
    assert d.actions == []
    assert d.next_deadline == 105.0


def test_missed_heartbeat_aborts_then_kills_after_grace() -> None:
    """A READY worker silent past the health-check timeout gets ABRT, later KILL."""
    workers = pool(2)
    workers[0].last_beat = 89.0
    d = decide(workers, Target(2, 1), LIMITS, {}, now=100.0)
    assert Abort(101, "no heartbeat for 11.0s") in d.actions
    assert Spawn(1, 1) in d.actions  # its replacement starts right away
    workers[0].state = WorkerState.ABORTING
    workers[0].deadline = 103.0
    d = decide(workers, Target(2, 1), LIMITS, {}, now=102.0)
    assert not any(isinstance(a, Kill) for a in d.actions)
    assert d.next_deadline == 103.0
    d = decide(workers, Target(2, 1), LIMITS, {}, now=103.0)
    assert Kill(101, "still running after SIGABRT") in d.actions


def test_boot_timeout_aborts() -> None:
    """A worker still BOOTING at its boot deadline is aborted (its stack shows the hang)."""
    w = FakeWorker(pid=5, slot=1, state=B, deadline=130.0)
    d = decide([w], Target(1, 1), LIMITS, {}, now=130.0)
    assert d.actions[0] == Abort(5, "boot timeout (30s)")


def test_drain_deadline_kills() -> None:
    """A draining worker past its drain deadline is killed."""
    old = FakeWorker(pid=9, slot=1, state=D, deadline=140.0)
    workers = [old, *pool(1, generation=2)]
    workers[1].last_beat = 135.0
    assert decide(workers, Target(1, 2), LIMITS, {}, now=139.0).actions == []
    d = decide(workers, Target(1, 2), LIMITS, {}, now=140.0)
    assert d.actions == [Kill(9, "still running at its drain deadline")]


@pytest.mark.smoke
def test_rolling_reload_drains_old_only_as_new_become_ready() -> None:
    """A reload never lets READY capacity drop below N."""
    target = Target(workers=2, generation=2, reload_from=1)
    old = pool(2, generation=1)
    d = decide(old, target, LIMITS, {}, now=100.0)
    assert d.actions == [Spawn(1, 2)]  # canary of the new generation, nothing drained
    new1 = FakeWorker(pid=201, slot=1, generation=2, state=B)
    assert decide([*old, new1], target, LIMITS, {}, now=100.5).actions == []
    new1.state = R
    d = decide([*old, new1], target, LIMITS, {}, now=101.0)
    assert Spawn(2, 2) in d.actions
    drains = [a for a in d.actions if isinstance(a, Drain)]
    assert len(drains) == 1 and drains[0].restart and drains[0].pid in (101, 102)
    assert not reload_complete([*old, new1], target)
    old[1].state = D
    new2 = FakeWorker(pid=202, slot=2, generation=2)
    d = decide([*old, new1, new2], target, LIMITS, {}, now=102.0)
    assert d.actions == [Drain(101, "replaced by generation 2", restart=True)]
    assert reload_complete([*old, new1, new2], target)


def test_superseded_booting_worker_is_stopped() -> None:
    """A booting worker of an abandoned generation is stopped, not kept."""
    w = FakeWorker(pid=300, slot=1, generation=3, state=B)
    d = decide([*pool(1), w], Target(1, 1), LIMITS, {}, now=100.0)
    assert d.actions == [Drain(300, "superseded while booting", restart=False)]


def test_memory_over_limit_retires_after_replacement_is_ready() -> None:
    """Over the memory limit: mark, spawn a replacement, drain only once it is READY."""
    workers = pool(2)
    workers[0].memory_mib = 120.0
    d = decide(workers, Target(2, 1), LIMITS, {}, now=100.0)
    assert d.actions == [Retire(101, "over memory limit: 120 MiB > 100 MiB"), Spawn(1, 1)]
    workers[0].retire_reason = "over memory limit"
    repl = FakeWorker(pid=103, slot=1, state=B)
    assert decide([*workers, repl], Target(2, 1), LIMITS, {}, now=101.0).actions == []
    repl.state = R
    d = decide([*workers, repl], Target(2, 1), LIMITS, {}, now=102.0)
    assert d.actions == [Drain(101, "over memory limit", restart=True)]


def test_memory_far_over_limit_kills() -> None:
    """At 1.5x the memory limit a worker is killed, and replaced."""
    workers = pool(1)
    workers[0].memory_mib = 151.0
    d = decide(workers, Target(1, 1), LIMITS, {}, now=100.0)
    assert kinds(d.actions) == ["Kill", "Spawn"]
    assert "151 MiB > 100 MiB" in d.actions[0].reason  # type: ignore[union-attr]


def test_memory_still_over_limit_when_graceful_drain_ends_kills() -> None:
    """A draining worker still over the limit when its graceful part ends is killed."""
    limits = Limits(healthcheck=10.0, boot=30.0, drain=40.0, graceful=31.0, memory_mib=100.0)
    w = FakeWorker(pid=9, slot=1, state=D, deadline=140.0, memory_mib=120.0)  # drain from 100
    workers = [w, *pool(1, generation=2)]
    workers[1].last_beat = 130.0
    d = decide(workers, Target(1, 2), limits, {}, now=130.0)
    assert d.actions == [] and d.next_deadline == 131.0
    d = decide(workers, Target(1, 2), limits, {}, now=131.0)
    assert kinds(d.actions) == ["Kill"]
    w.memory_mib = 90.0  # back under the limit: it may finish its lifespan shutdown
    assert decide(workers, Target(1, 2), limits, {}, now=131.0).actions == []


def test_ttin_spawns_and_ttou_drains_highest_slot() -> None:
    """TTIN adds a slot; TTOU drains the highest slot, never below the target."""
    d = decide(pool(2), Target(3, 1), LIMITS, {}, now=100.0)
    assert d.actions == [Spawn(3, 1)]
    d = decide(pool(3), Target(2, 1), LIMITS, {}, now=100.0)
    assert d.actions == [Drain(103, "pool shrunk", restart=True)]


def test_graceful_and_fast_stop() -> None:
    """Stopping drains every live worker (graceful) or quits all of them (fast)."""
    workers = [*pool(2), FakeWorker(pid=7, slot=3, state=D)]
    d = decide(workers, Target(2, 1, stop=StopMode.GRACEFUL), LIMITS, {}, now=100.0)
    assert d.actions == [Drain(101, "shutdown", False), Drain(102, "shutdown", False)]
    d = decide(workers, Target(2, 1, stop=StopMode.FAST), LIMITS, {}, now=100.0)
    assert d.actions == [Quit(101), Quit(102), Quit(7)]


def test_backoff_delays_only_its_own_slot() -> None:
    """A slot's pending backoff holds that slot's spawn only; the wake-up is its end."""
    backoffs = {2: Backoff(streak=3, not_before=105.0)}
    d = decide([], Target(1, 1), LIMITS, {1: Backoff(3, 105.0)}, now=100.0)
    assert d.actions == [] and d.next_deadline == 105.0
    d = decide([], Target(1, 1), LIMITS, {1: Backoff(3, 105.0)}, now=105.0)
    assert d.actions == [Spawn(1, 1)]
    d = decide(pool(1), Target(3, 1), LIMITS, backoffs, now=100.0)
    assert d.actions == [Spawn(3, 1)]
    assert d.next_deadline == 105.0


def test_a_worker_that_served_is_replaced_at_once() -> None:
    """READY for a second or more: a death (kill -9, OOM) clears the slot's streak."""
    w = FakeWorker(pid=1, slot=1, started_at=100.0, ready_at=100.5)
    v = judge_exit(w, Target(4, 1), Backoff(streak=5, not_before=0.0), True, now=101.5)
    assert v.kind is ExitKind.CRASH and v.backoff == Backoff() and v.delay == 0.0


def test_chaos_kills_of_healthy_workers_never_back_off() -> None:
    """Healthy workers of different slots killed 1.5 s apart: every one is replaced at once
    (before, one shared streak said 'crashed 6 times in a row; next start in 8.0s')."""
    backoffs: dict[int, Backoff] = {}
    now = 100.0
    ready_at = dict.fromkeys(range(1, 5), 99.0)
    for kill in range(40):
        slot = 1 + (kill * 3) % 4
        w = FakeWorker(pid=kill, slot=slot, started_at=ready_at[slot] - 0.3,
                       ready_at=ready_at[slot])  # fmt: skip
        v = judge_exit(w, Target(4, 1), backoffs.get(slot, Backoff()), True, now)
        backoffs[slot] = v.backoff
        assert v.delay == 0.0
        assert decide([], Target(4, 1), LIMITS, backoffs, now).actions == [
            Spawn(s, 1) for s in range(1, 5)
        ]
        ready_at[slot] = now + 0.3
        now += 1.5


def test_deaths_before_or_just_after_ready_back_off_per_slot() -> None:
    """Dying before READY or within 1 s of it builds the slot's streak."""
    backoff = Backoff()
    delays = []
    for i in range(4):
        born = 100.0 + 10 * i
        early = FakeWorker(pid=i, slot=2, started_at=born, ready_at=born + 0.2)
        v = judge_exit(early, Target(2, 1), backoff, ever_ready=True, now=born + 0.9)
        assert v.kind is ExitKind.CRASH
        backoff = v.backoff
        delays.append(v.delay)
    assert delays == [0.0, 0.5, 1.0, 2.0]
    never = FakeWorker(pid=9, slot=2, state=B, booted=False, ready_at=None, started_at=140.0)
    v = judge_exit(never, Target(2, 1), backoff, ever_ready=True, now=200.0)
    assert v.kind is ExitKind.BOOT_FAILURE and v.delay == 4.0 and v.halt is None


def test_backoff_grows_exponentially_and_caps() -> None:
    """Quick repeated crashes: 0, 0.5, 1, 2, ... seconds, capped at 30."""
    assert [backoff_delay(n) for n in range(1, 6)] == [0.0, 0.5, 1.0, 2.0, 4.0]
    assert backoff_delay(50) == 30.0


def test_boot_failure_before_any_ready_halts_with_3() -> None:
    """A boot failure while no worker was ever READY stops the master with exit 3."""
    w = FakeWorker(pid=1, slot=1, state=B)
    v = judge_exit(w, Target(1, 1), Backoff(), ever_ready=False, now=1.0)
    assert v.kind is ExitKind.BOOT_FAILURE and v.halt is ExitCode.APP_FAILED


@pytest.mark.parametrize(
    ("announced", "halt"),
    [(2, ExitCode.USAGE), (1, ExitCode.ERROR), (3, ExitCode.APP_FAILED), (0, ExitCode.APP_FAILED),
     (77, ExitCode.APP_FAILED), (None, ExitCode.APP_FAILED)],
)  # fmt: skip
def test_boot_failure_halts_with_the_code_the_worker_announced(
    announced: int | None, halt: ExitCode
) -> None:
    """The master exits as one process would have: a worker's FATAL code is passed on."""
    w = FakeWorker(pid=1, slot=1, state=B, fatal_code=announced)
    assert judge_exit(w, Target(1, 1), Backoff(), ever_ready=False, now=1.0).halt is halt


def test_boot_timeout_abort_counts_as_boot_failure() -> None:
    """A worker aborted while still booting is a boot failure (exit 3 if none ever READY)."""
    w = FakeWorker(pid=1, slot=1, state=WorkerState.ABORTING, booted=False)
    v = judge_exit(w, Target(1, 1), Backoff(), ever_ready=False, now=1.0)
    assert v.kind is ExitKind.BOOT_FAILURE and v.halt is ExitCode.APP_FAILED
    hung = FakeWorker(pid=2, slot=1, state=WorkerState.ABORTING, started_at=-100.0)
    assert judge_exit(hung, Target(1, 1), Backoff(), True, now=1.0).kind is ExitKind.CRASH


def test_no_second_canary_while_first_boot_is_aborted() -> None:
    """While a timed-out boot is being aborted, nothing else boots in a reload, and its
    own slot waits for the exit to be judged."""
    w = FakeWorker(pid=1, slot=1, generation=2, state=WorkerState.ABORTING, booted=False,
                   deadline=110.0)  # fmt: skip
    d = decide([*pool(2), w], Target(2, 2, reload_from=1), LIMITS, {}, now=100.0)
    assert d.actions == []
    w.generation = 1
    d = decide([w], Target(2, 1), LIMITS, {}, now=100.0)
    assert d.actions == [Spawn(2, 1)]


def test_boot_failure_during_reload_abandons_it() -> None:
    """The new generation failing to boot abandons the reload instead of halting."""
    w = FakeWorker(pid=1, slot=1, generation=2, state=B)
    v = judge_exit(w, Target(2, 2, reload_from=1), Backoff(), ever_ready=True, now=1.0)
    assert v.abandon_reload and v.halt is None


def test_requested_exits_are_expected() -> None:
    """Draining, quitting and killed workers exit as expected: no backoff, no halt."""
    for state in (D, WorkerState.QUITTING, WorkerState.KILLED):
        v = judge_exit(FakeWorker(pid=1, slot=1, state=state), Target(1, 1), Backoff(), False, 1.0)
        assert v.kind is ExitKind.EXPECTED and v.halt is None


def test_invalid_transition_raises() -> None:
    """Worker state changes outside the lifecycle raise a named error."""
    check_transition(B, R)
    with pytest.raises(InvalidTransition):
        check_transition(D, R)


# --- simulated rolling replacement: capacity never dips ---------------------------------


def _apply(workers: list[FakeWorker], actions: Sequence[object], next_pid: list[int]) -> None:
    by_pid = {w.pid: w for w in workers}
    for action in actions:
        if isinstance(action, Spawn):
            next_pid[0] += 1
            workers.append(
                FakeWorker(
                    pid=next_pid[0],
                    slot=action.slot,
                    generation=action.generation,
                    state=B,
                    booted=False,
                )
            )
        elif isinstance(action, Drain):
            by_pid[action.pid].state = D
        elif isinstance(action, Retire):
            by_pid[action.pid].retire_reason = action.reason
        else:
            raise AssertionError(f"unexpected {action}")


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 4),
    choices=st.lists(st.integers(0, 1000), min_size=60, max_size=60),
    retire_first=st.booleans(),
)
def test_reload_or_retirement_never_drops_ready_capacity(
    n: int, choices: list[int], retire_first: bool
) -> None:
    """Whatever order boots and exits happen in, READY capacity stays >= N and ends new."""
    workers = pool(n)
    for w in workers:
        w.last_beat = 1e9  # no heartbeat timeouts in this simulation
    if retire_first:
        workers[0].memory_mib = 150.0  # over the limit: retired through a replacement
        target = Target(n, 1)
    else:
        target = Target(n, 2, reload_from=1)
    limits = Limits(healthcheck=1e9, boot=1e9, drain=1e9, memory_mib=120.0)
    next_pid = [1000]
    for choice in choices:
        d = decide(workers, target, limits, {}, now=0.0)
        _apply(workers, d.actions, next_pid)
        ready = sum(1 for w in workers if w.state is R)
        assert ready >= n, [(w.pid, w.generation, w.state) for w in workers]
        # One random event: a booting worker becomes READY, or a draining one exits.
        movable = [w for w in workers if w.state in (B, D)]
        if not movable:
            continue
        w = movable[choice % len(movable)]
        if w.state is B:
            w.state, w.booted, w.memory_mib = R, True, None
        else:
            workers.remove(w)
    if not retire_first:
        # Finish: let everything settle, then only generation 2 remains.
        for _ in range(4 * n + 4):
            _apply(workers, decide(workers, target, limits, {}, 0.0).actions, next_pid)
            for w in list(workers):
                if w.state is B:
                    w.state, w.booted = R, True
                elif w.state is D:
                    workers.remove(w)
        assert reload_complete(workers, target)
        assert {w.generation for w in workers} == {2} and len(workers) == n
