"""Judging a reaped worker's exit, and the crash-loop backoff: pure, like the policy.

- An exit the master asked for (drain, fast stop, kill), or any exit during a stop, is
  expected: nothing follows from it.
- A boot failure before any worker was ever READY halts the master with the code the
  worker announced (3 when it announced none): the app cannot start, and retrying would
  only repeat the failure.
- A boot failure of the new generation during a reload abandons the reload: the old
  generation keeps serving.
- Otherwise the backoff is per slot: a worker that was READY for at least
  :data:`STABLE_AFTER_READY` is replaced at once and clears its slot's streak; a slot whose
  workers keep dying before READY or within that second of it backs off exponentially.
  Healthy workers killed one after another (an OOM killer, an operator) are therefore
  never mistaken for a crash loop, and one bad slot never delays the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from corral.errors import ExitCode
from corral.supervisor.model import (
    Backoff,
    StopMode,
    Target,
    WorkerState,
    WorkerView,
    is_booting,
)

#: A worker that dies less than this after reporting READY (or before READY) counts as
#: unstable, and repeated unstable deaths in one slot back off. A second covers code that
#: fails on its first request or first timer tick, while a worker that served for longer
#: proved its code and environment boot, so replacing it at once loses nothing.
STABLE_AFTER_READY = 1.0
#: Backoff after the second quick crash in a row, doubling each time up to the cap.
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
#: Codes a worker's FATAL may hand on as the master's own exit code; anything else is 3.
_HALT_CODES = frozenset({ExitCode.ERROR, ExitCode.USAGE, ExitCode.APP_FAILED})


class ExitKind(Enum):
    #: The master asked for it (drain, quit, kill): nothing to do.
    EXPECTED = "expected"
    #: Died while serving without being asked (or was aborted as hung).
    CRASH = "crash"
    #: Died before it ever reported READY.
    BOOT_FAILURE = "boot failure"


@dataclass(frozen=True)
class ExitVerdict:
    kind: ExitKind
    backoff: Backoff
    #: Stop the master with this code (boot failure before any worker was ever READY).
    halt: ExitCode | None = None
    #: The new generation failed to boot: keep the old one, end the reload.
    abandon_reload: bool = False
    #: Seconds until the next spawn may happen, when a backoff was started (for the log).
    delay: float = 0.0


def backoff_delay(streak: int) -> float:
    """No delay for a slot's first unstable death, then 0.5 s doubling up to 30 s."""
    if streak <= 1:
        return 0.0
    return min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** (streak - 2))


def judge_exit(
    worker: WorkerView,
    target: Target,
    backoff: Backoff,
    ever_ready: bool,
    now: float,
) -> ExitVerdict:
    """Classify a reaped worker's exit and what follows from it.

    ``backoff`` is the backoff of the worker's slot; the verdict's is that slot's next one.
    """
    if worker.state in (WorkerState.DRAINING, WorkerState.QUITTING, WorkerState.KILLED):
        return ExitVerdict(ExitKind.EXPECTED, backoff)
    if target.stop is not StopMode.NONE:
        return ExitVerdict(ExitKind.EXPECTED, backoff)
    booting = is_booting(worker)
    if booting and not ever_ready:
        # The code the worker announced, so the master exits as one process would have (a
        # config error the worker found is 2, an app that failed to load or start is 3).
        halt = ExitCode(worker.fatal_code) if worker.fatal_code in _HALT_CODES else None
        return ExitVerdict(ExitKind.BOOT_FAILURE, backoff, halt=halt or ExitCode.APP_FAILED)
    if booting and target.reload_from is not None and worker.generation == target.generation:
        return ExitVerdict(ExitKind.BOOT_FAILURE, Backoff(), abandon_reload=True)
    kind = ExitKind.BOOT_FAILURE if booting else ExitKind.CRASH
    stable = worker.ready_at is not None and now - worker.ready_at >= STABLE_AFTER_READY
    if stable and not booting:
        return ExitVerdict(kind, Backoff())  # replaced at once, the slot's streak cleared
    streak = backoff.streak + 1
    delay = backoff_delay(streak)
    return ExitVerdict(kind, Backoff(streak, now + delay), delay=delay)
