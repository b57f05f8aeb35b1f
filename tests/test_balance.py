"""Connection balancing between forked workers: the shared load table, the accept/defer
decision (fake clock), and two real workers splitting concurrent keep-alive connections."""

from __future__ import annotations

import os
import re
import socket
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from corral.worker.balance import (
    ABSENT,
    MARGIN,
    MAX_DEFER,
    Balancer,
    Deferral,
    LoadTable,
    balancer_for,
    decide,
)

from tests.master_apps import Running, wait_until

ROOT = Path(__file__).resolve().parent.parent


def table(seats: int = 8) -> LoadTable:
    return LoadTable(bytearray((seats + 1) * 8), seats)


# --- the table ---------------------------------------------------------------------------


def test_claim_gives_the_lowest_free_seat_and_release_frees_it() -> None:
    """Seats are handed out lowest first, and a released seat is reused."""
    t = table()
    assert [t.claim(), t.claim(), t.claim()] == [1, 2, 3]
    t.release(2)
    assert t.claim() == 2


def test_claim_returns_none_when_full() -> None:
    """A full table gives no seat (that worker just never defers)."""
    t = table(seats=2)
    assert t.claim() == 1 and t.claim() == 2
    assert t.claim() is None


def test_least_other_skips_own_absent_and_withdrawn_seats() -> None:
    """The least-loaded peer ignores the asking seat, unpublished seats and withdrawn ones."""
    t = table()
    for _ in range(4):
        t.claim()
    t.publish(1, 5)
    t.publish(2, 9)
    t.publish(3, 1)  # seat 4 claimed but never published: absent
    assert t.least_other(1) == 1
    assert t.least_other(3) == 5
    t.withdraw(3)
    assert t.least_other(1) == 9
    assert t.load(3) is None
    t.withdraw(2)
    assert t.least_other(1) is None


def test_release_clears_the_seat_and_shrinks_the_scanned_range() -> None:
    """A reaped worker's load stops counting, and the seat is absent for the next worker."""
    t = table()
    for _ in range(3):
        t.claim()
    t.publish(3, 0)
    t.publish(1, 7)
    t.release(3)
    assert t.load(3) is None
    assert t.least_other(1) is None  # seat 2 is held but its worker hasn't published
    assert t.claim() == 3
    assert t.load(3) is None


def test_buffer_too_small_is_refused() -> None:
    """A buffer that cannot hold every seat raises instead of corrupting memory."""
    with pytest.raises(ValueError):
        LoadTable(bytearray(16), seats=8)


def test_shared_table_is_seen_across_fork() -> None:
    """A load published by a forked child is read by the parent (MAP_SHARED, not a copy)."""
    t = LoadTable.create(seats=4)
    mine, child_seat = t.claim(), t.claim()
    assert mine is not None and child_seat is not None
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        t.sit(child_seat)
        t.publish(child_seat, 42)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert t.least_other(mine) == 42


@pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="memfd is Linux-only")
def test_adopted_table_keeps_loads_and_taken_seats() -> None:
    """What a re-executed master maps from the handed-over fd: the same memory, the loads
    the old workers published, and their seats taken so new workers get other ones."""
    old = LoadTable.create(seats=4)
    assert old.fd is not None
    first, second = old.claim(), old.claim()
    assert first == 1 and second == 2
    old.publish(first, 5)
    old.publish(second, 7)
    new = LoadTable.adopt(os.dup(old.fd))
    assert new.seats == 4
    new.take(first)
    new.take(second)
    assert new.load(first) == 5 and new.load(second) == 7
    seat = new.claim()
    assert seat == 3
    new.publish(seat, 1)
    assert old.least_other(first) == 1, "old and new workers see one table"
    assert new.least_other(seat) == 5


def test_table_without_memfd_falls_back_to_anonymous_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where memfd_create fails (a sandbox), the table still works; it just has no fd."""

    def refuse(*args: object) -> int:
        raise PermissionError("memfd_create refused")

    monkeypatch.setattr(os, "memfd_create", refuse, raising=False)
    table = LoadTable.create(seats=2)
    assert table.fd is None
    seat = table.claim()
    assert seat is not None
    table.publish(seat, 3)
    assert table.load(seat) == 3


# --- the decision ------------------------------------------------------------------------


def test_accepts_up_to_the_margin_above_the_least_loaded_peer() -> None:
    """Within the margin a worker accepts what keeps it there, at most one batch."""
    assert decide(own=10, least=10, deferral=None, now=0.0, batch=8).accept == MARGIN + 1
    assert decide(own=0, least=30, deferral=None, now=0.0, batch=8).accept == 8
    assert decide(own=5, least=None, deferral=None, now=0.0, batch=8).accept == 8


def test_defers_when_ahead_and_keeps_the_run_start() -> None:
    """Ahead of the least-loaded peer: defer, and later deferrals keep the run's start."""
    first = decide(own=20, least=10, deferral=None, now=1.0, batch=8)
    assert first.accept == 0
    assert first.deferral == Deferral(1.0, 1.0, 10)
    later = decide(own=20, least=10, deferral=first.deferral, now=1.01, batch=8)
    assert later.accept == 0
    assert later.deferral == Deferral(1.0, 1.01, 10)


def test_deferral_is_bounded_then_accepts_while_the_peer_stays_stuck() -> None:
    """Past MAX_DEFER without the peer moving, the worker accepts, and keeps doing so."""
    d = decide(own=20, least=10, deferral=None, now=0.0, batch=8).deferral
    now = 0.0
    while now < MAX_DEFER:
        now += 0.001
        decision = decide(own=20, least=10, deferral=d, now=now, batch=8)
        d = decision.deferral
    assert decision.accept == 8
    assert d is not None and d.forced
    # Still stuck much later (even after a quiet spell): no new stall.
    assert decide(own=40, least=10, deferral=d, now=now + 5.0, batch=8).accept == 8


def test_a_peer_that_moves_ends_the_forced_mode() -> None:
    """Once the stuck peer's load changes it is alive again: deferring resumes."""
    forced = Deferral(0.0, 0.1, 10, forced=True)
    decision = decide(own=40, least=11, deferral=forced, now=0.2, batch=8)
    assert decision.accept == 0
    assert decision.deferral == Deferral(0.2, 0.2, 11)


def test_a_run_that_ended_long_ago_does_not_count() -> None:
    """A deferral whose last decision is older than MAX_DEFER starts afresh (nothing waited)."""
    old = Deferral(0.0, 0.01, 10)
    decision = decide(own=20, least=10, deferral=old, now=5.0, batch=8)
    assert decision.accept == 0
    assert decision.deferral == Deferral(5.0, 5.0, 10)


def test_back_within_the_margin_ends_the_run() -> None:
    """Accepting within the margin clears the deferral state."""
    run = Deferral(0.0, 0.01, 10)
    decision = decide(own=12, least=10, deferral=run, now=0.02, batch=8)
    assert decision == decide(own=12, least=10, deferral=None, now=0.02, batch=8)
    assert decision.deferral is None and decision.accept == 1


# --- one worker's balancer ---------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_balancer_publishes_its_load_and_defers_to_a_lighter_peer() -> None:
    """The allowance publishes connections plus set-ups, and is 0 when too far ahead."""
    t = table()
    mine, peer = t.claim(), t.claim()
    assert mine is not None and peer is not None
    connections: set[object] = {object() for _ in range(6)}
    clock = Clock()
    balancer = Balancer(t, mine, connections, clock)
    balancer.setting_up = 2
    assert balancer.allowance(8) == 8  # no peer published yet
    assert t.load(mine) == 8
    t.publish(peer, 3)
    assert balancer.allowance(8) == 0
    start = clock.now
    while balancer.allowance(8) == 0:  # the peer never moves: bounded deferral
        assert clock.now - start < 2 * MAX_DEFER
        clock.now += 0.001
    assert clock.now - start >= MAX_DEFER
    balancer.set_up()
    balancer.set_up()
    connections.clear()
    assert balancer.allowance(8) == 3 + MARGIN + 1
    balancer.withdraw()
    assert t.least_other(peer) is None
    balancer.publish()  # a connection closing during the drain
    assert t.least_other(peer) is None


def test_a_closing_connection_republishes_and_wakes_deferring_acceptors_once() -> None:
    """changed() publishes the lower load and calls each registered wake-up exactly once."""
    t = table()
    mine = t.claim()
    assert mine is not None
    connections: set[int] = {1, 2, 3}
    balancer = Balancer(t, mine, connections)
    woken: list[str] = []
    balancer.wake_on_change(lambda: woken.append("a"))
    connections.discard(3)
    balancer.changed()
    assert t.load(mine) == 2
    assert woken == ["a"]
    balancer.changed()
    assert woken == ["a"]


def test_balancer_for_needs_a_table_and_a_seat() -> None:
    """Single-process mode (no table) and a worker without a seat never balance."""
    assert balancer_for(None, set()) is None
    t = table()
    assert balancer_for(t, set()) is None
    t.sit(t.claim())
    balancer = balancer_for(t, {1, 2})
    assert balancer is not None
    assert t.load(1) == 2  # published on creation: peers count it at once


def test_absent_is_above_any_load() -> None:
    """The absent marker sorts above every real load, so min() skips it."""
    assert ABSENT > 10**12


# --- two real workers --------------------------------------------------------------------

APP = "tests.master_apps:app"
CONNECTIONS = 40


@pytest.fixture
def corral_server(tmp_path: Path) -> Iterator[Any]:
    started: list[Running] = []

    def start(*args: str) -> Running:
        cmd = [sys.executable, "-m", "corral", APP, "--port", "0", "--no-access-log", *args]
        server = Running(cmd, str(tmp_path / f"server{len(started)}.log"), cwd=ROOT)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def _served_by(sock: socket.socket) -> int:
    """Send one keep-alive request on ``sock``; the pid of the worker that answered."""
    sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    data = b""
    while True:
        head, sep, body = data.partition(b"\r\n\r\n")
        length = re.search(rb"(?i)content-length: (\d+)", head)
        if sep and length and len(body) >= int(length.group(1)):
            break
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    match = re.search(rb"pid=(\d+)", body)
    assert match, data
    return int(match.group(1))


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_two_workers_split_concurrent_connections_evenly(corral_server: Any, loop: str) -> None:
    """40 keep-alive connections opened at once spread over 2 workers within 24/16."""
    server = corral_server("--workers", "2", "--loop", loop)
    log = server.wait_log(") ready", count=2, timeout=20)
    match = re.search(r"running on http://127\.0\.0\.1:(\d+)", log)
    assert match, log
    port = int(match.group(1))
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(CONNECTIONS)]
    try:
        served = Counter(_served_by(sock) for sock in socks)
    finally:
        for sock in socks:
            sock.close()
    assert set(served) <= set(server.children()), served
    assert len(served) == 2, served
    assert min(served.values()) >= 16, served


def _blocked_worker(pids: list[int]) -> int | None:
    """The worker whose loop sits in the app's time.sleep (as /proc shows its wait)."""
    for pid in pids:
        try:
            with open(f"/proc/{pid}/wchan") as handle:
                if "nanosleep" in handle.read():
                    return pid
        except OSError:
            continue
    return None


def test_a_blocked_worker_does_not_stall_accepting(corral_server: Any) -> None:
    """With a sibling's loop blocked, a worker stops deferring to it and takes everything."""
    if not os.path.exists(f"/proc/{os.getpid()}/wchan"):
        pytest.skip("needs /proc/PID/wchan to see which worker is blocked")
    server = corral_server("--workers", "2")
    log = server.wait_log(") ready", count=2, timeout=20)
    match = re.search(r"running on http://127\.0\.0\.1:(\d+)", log)
    assert match, log
    port = int(match.group(1))
    blocker = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        blocker.sendall(b"GET /block?s=30 HTTP/1.1\r\nHost: t\r\n\r\n")
        wait_until(lambda: _blocked_worker(server.children()) is not None, 10, "a blocked worker")
        blocked = _blocked_worker(server.children())
        # Each request must be answered well before the block ends, and before the 5 s
        # keep-alive timeout frees the healthy worker's connections: a deferral that never
        # gave up would leave the connections waiting that long.
        socks = [socket.create_connection(("127.0.0.1", port), timeout=2) for _ in range(12)]
        try:
            served = Counter(_served_by(sock) for sock in socks)
        finally:
            for sock in socks:
                sock.close()
    finally:
        blocker.close()
    assert sum(served.values()) == 12
    assert blocked not in served, served


def _table_inode(pid: int) -> int | None:
    """The inode of the load table's memfd as mapped by process ``pid``, if it maps one."""
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            if "memfd:corral-load" in line:
                return int(line.split()[4])
    return None


@pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="memfd is Linux-only")
def test_preload_reexec_keeps_one_load_table(corral_server: Any) -> None:
    """A --preload reload re-executes the master: it maps the same table again, so the
    adopted workers and their replacements balance in one table, not in two."""
    import signal

    server = corral_server("--workers", "2", "--preload")
    server.wait_log(") ready", count=2, timeout=30)
    table = _table_inode(server.pid)
    old = set(server.children())
    assert table is not None and {_table_inode(pid) for pid in old} == {table}
    server.signal(signal.SIGHUP)
    server.wait_log("Reload complete", timeout=30)
    assert "Re-executing the master" in server.log()
    assert _table_inode(server.pid) == table
    wait_until(lambda: not old & set(server.children()), 30, "the old workers to exit")
    new = server.children()
    assert len(new) == 2 and {_table_inode(pid) for pid in new} == {table}
