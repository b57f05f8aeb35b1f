"""Spreading connections evenly over workers that share one listening socket.

Forked workers on one socket race for each new connection, and whichever loop wakes first
tends to take them all (measured here with 2 workers: 64/0 at 64 connections). So the
master creates a small :class:`LoadTable` in shared memory before its first fork (a memfd
on Linux, handed on when the master re-executes itself); every worker inherits it, sits in
its own seat and publishes its live connection count there. Before accepting, a worker
compares its count with the least-loaded peer (:func:`decide`): too far ahead, it stops
reading the listening socket for a moment so a peer takes the connection. Deferral is
bounded in time, so a hung or slow peer never stalls accepting (the health check deals
with hung workers).

No locks: each seat has one writer (its worker; the master only when the worker is gone),
a seat is one aligned 64-bit word, and a stale read only makes a decision slightly off.
"""

from __future__ import annotations

import mmap
import os
import time
from collections.abc import Callable, Sized
from dataclasses import dataclass

#: The value of a seat whose worker is absent or not accepting: larger than any load, so
#: ``min`` over the seats skips it without a branch per seat.
ABSENT = 2**63 - 1
#: Seats in a table. A seat is held from just before a fork until the worker is reaped,
#: so this bounds the workers alive at once across generations (a reload briefly doubles
#: them); workers beyond it get no seat and simply never defer.
TABLE_SEATS = 256
#: A worker accepts while its load is at most this many connections above the least
#: loaded peer: small enough for max/min <= 1.2 at 64 connections over 2 workers, large
#: enough that two workers don't take turns one connection at a time.
MARGIN = 2
#: How long a deferring worker leaves the listening socket alone before looking again.
RETRY_DELAY = 0.001
#: The longest run of deferrals. A peer that hasn't taken the waiting connections by then
#: is hung or starved of CPU: the worker accepts for itself until that peer shows life
#: (its load changes). Long enough for a busy 2-core machine to schedule the peer (runs of
#: up to ~7 ms were measured here under wrk), short enough to be a mere hiccup.
MAX_DEFER = 0.05


class LoadTable:
    """Seats of 64-bit loads over a shared buffer; word 0 bounds the seats in use.

    The master claims and releases seats (its Python-side bookkeeping is its own); workers
    publish into the seat they were given. Built over any writable buffer so it is testable
    without processes; :meth:`create` makes the shared one.
    """

    def __init__(self, buffer: bytearray | mmap.mmap, seats: int, *, fresh: bool = True) -> None:
        self._buffer = buffer
        self._view = memoryview(buffer).cast("q")
        if len(self._view) < seats + 1:
            raise ValueError("buffer too small for the table")
        self.seats = seats
        self._claimed: set[int] = set()
        #: This process's seat (set in a forked worker by :meth:`sit`).
        self.mine: int | None = None
        #: The memfd behind a shared table, which a re-executing master hands over.
        self.fd: int | None = None
        if fresh:
            for index in range(1, seats + 1):
                self._view[index] = ABSENT
            self._view[0] = 0

    @classmethod
    def create(cls, seats: int = TABLE_SEATS) -> LoadTable:
        """A table in shared memory, visible to every process forked after this.

        Backed by a memfd where the platform has one (Linux), so that a master which
        re-executes itself (--preload reload) maps the same table again and its adopted
        workers keep balancing with the new ones; elsewhere anonymous shared memory.
        """
        size = (seats + 1) * 8
        try:
            fd = os.memfd_create("corral-load", os.MFD_CLOEXEC)
        except (AttributeError, OSError):  # no memfd here, or a sandbox refuses it
            return cls(mmap.mmap(-1, size, flags=mmap.MAP_SHARED), seats)
        try:
            os.ftruncate(fd, size)
            table = cls(mmap.mmap(fd, size, flags=mmap.MAP_SHARED), seats)
        except BaseException:
            os.close(fd)
            raise
        table.fd = fd
        return table

    @classmethod
    def adopt(cls, fd: int) -> LoadTable:
        """Map the table a previous master image handed over; the loads in it stay."""
        size = os.fstat(fd).st_size
        table = cls(mmap.mmap(fd, size, flags=mmap.MAP_SHARED), size // 8 - 1, fresh=False)
        table.fd = fd
        return table

    # --- master side -------------------------------------------------------------------
    def claim(self) -> int | None:
        """The lowest free seat (before forking its worker); None when all are taken."""
        for index in range(1, self.seats + 1):
            if index not in self._claimed:
                self._claimed.add(index)
                self._view[index] = ABSENT  # the worker publishes once it accepts
                if index > self._view[0]:
                    self._view[0] = index
                return index
        return None

    def take(self, index: int) -> None:
        """Mark ``index`` as held by an adopted worker (what it published stays)."""
        self._claimed.add(index)
        if index > self._view[0]:
            self._view[0] = index

    def release(self, index: int) -> None:
        """The seat's worker is gone (reaped, or its fork failed): free the seat."""
        self._claimed.discard(index)
        self._view[index] = ABSENT
        self._view[0] = max(self._claimed, default=0)

    # --- worker side -------------------------------------------------------------------
    def sit(self, index: int | None) -> None:
        """In the forked worker: remember which seat is this process's."""
        self.mine = index

    def publish(self, index: int, load: int) -> None:
        self._view[index] = load

    def withdraw(self, index: int) -> None:
        """Stop counting this seat as accepting (its worker is draining)."""
        self._view[index] = ABSENT

    def load(self, index: int) -> int | None:
        value = self._view[index]
        return None if value == ABSENT else value

    def least_other(self, index: int) -> int | None:
        """The smallest load published by an accepting peer of seat ``index``, if any."""
        view = self._view
        end = view[0] + 1
        least = min(min(view[1:index], default=ABSENT), min(view[index + 1 : end], default=ABSENT))
        return None if least == ABSENT else least


@dataclass(frozen=True)
class Deferral:
    """A run of deferrals: when it began, the latest decision in it, and the load of the
    least-loaded peer when it began (a change shows that peer is alive)."""

    since: float
    last: float
    peer_load: int
    #: Past ``MAX_DEFER`` without the peer taking anything: accepting for itself.
    forced: bool = False


@dataclass(frozen=True)
class Decision:
    """How many connections to accept now (0: defer), and the deferral run to keep."""

    accept: int
    deferral: Deferral | None


def decide(
    own: int,
    least: int | None,
    deferral: Deferral | None,
    now: float,
    batch: int,
    margin: int = MARGIN,
    max_defer: float = MAX_DEFER,
) -> Decision:
    """Accept up to ``batch`` while at most ``margin`` above the least-loaded peer, else defer.

    A run of deferrals lasts at most ``max_defer``; then the worker accepts for itself
    (``forced``) until the least-loaded peer's load changes. A run whose latest decision is
    older than ``max_defer`` is over: nothing was waiting meanwhile.
    """
    room = batch if least is None else min(batch, least + margin + 1 - own)
    if room > 0 or least is None:
        return Decision(room, None)
    if deferral is None or least != deferral.peer_load:
        return Decision(0, Deferral(now, now, least))  # a new run (or the peer moved)
    if deferral.forced:
        return Decision(batch, Deferral(deferral.since, now, least, forced=True))
    if now - deferral.last > max_defer:
        return Decision(0, Deferral(now, now, least))  # the previous run ended long ago
    if now - deferral.since < max_defer:
        return Decision(0, Deferral(deferral.since, now, least))
    return Decision(batch, Deferral(deferral.since, now, least, forced=True))


class Balancer:
    """One worker's side of the table: its load, and whether to accept now or defer."""

    def __init__(
        self,
        table: LoadTable,
        seat: int,
        connections: Sized,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._table = table
        self._seat = seat
        self._connections = connections
        self._clock = clock
        #: Connections accepted whose protocol isn't in ``connections`` yet (set-up tasks).
        self.setting_up = 0
        self._deferral: Deferral | None = None
        self._withdrawn = False
        #: Acceptors deferring until one of this worker's connections closes.
        self._waiting: set[Callable[[], None]] = set()

    def load(self) -> int:
        return len(self._connections) + self.setting_up

    def publish(self) -> None:
        """Write this worker's load (after an accept or a close) unless it withdrew."""
        if not self._withdrawn:
            self._table.publish(self._seat, len(self._connections) + self.setting_up)

    def allowance(self, batch: int) -> int:
        """Publish this worker's load; how many connections to accept now (0: defer)."""
        own = len(self._connections) + self.setting_up
        table = self._table
        table.publish(self._seat, own)
        least = table.least_other(self._seat)
        if least is None:
            self._deferral = None
            return batch
        if own <= least + MARGIN:  # the common case, without a clock read
            self._deferral = None
            return min(batch, least + MARGIN + 1 - own)
        decision = decide(own, least, self._deferral, self._clock(), batch)
        self._deferral = decision.deferral
        return decision.accept

    def changed(self) -> None:
        """A connection closed: republish, and wake the acceptors deferring meanwhile (a
        worker whose load drops looks again at once rather than idling out its delay)."""
        self.publish()
        if self._waiting:
            waiting = list(self._waiting)
            self._waiting.clear()
            for wake in waiting:
                wake()

    def wake_on_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once, at the next :meth:`changed`."""
        self._waiting.add(callback)

    def set_up(self) -> None:
        """An accepted connection's protocol is (about to be) in ``connections``."""
        self.setting_up -= 1

    def withdraw(self) -> None:
        """This worker stopped accepting: peers no longer defer to it (for good: closing
        connections during the drain no longer publish)."""
        self._withdrawn = True
        self._table.withdraw(self._seat)


def balancer_for(table: LoadTable | None, connections: Sized) -> Balancer | None:
    """The Balancer of this forked worker, or None (no table, or no seat was free)."""
    if table is None or table.mine is None:
        return None
    balancer = Balancer(table, table.mine, connections)
    balancer.publish()  # from now on peers count this worker as accepting
    return balancer
