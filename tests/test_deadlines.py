"""The per-process deadline sweep, driven without sockets."""

from __future__ import annotations

import asyncio
import socket

from corral.worker.deadlines import MAX_INTERVAL, MIN_INTERVAL, DeadlineSweep
from corral.worker.http1.protocol import ListenerFacts


class Conn:
    def __init__(self) -> None:
        self.deadline = 0.0
        self.fired = 0

    def on_deadline(self) -> None:
        self.fired += 1


def test_interval_follows_the_shortest_timeout() -> None:
    loop = asyncio.new_event_loop()
    try:
        assert DeadlineSweep(loop, 5.0).interval == MAX_INTERVAL
        assert DeadlineSweep(loop, 0.2).interval == 0.1
        assert DeadlineSweep(loop, 0.001).interval == MIN_INTERVAL
    finally:
        loop.close()


def test_due_connections_fire_once_and_the_sweep_stops_when_idle() -> None:
    """A passed deadline fires once (and is cleared); a future or absent one does not; with
    nothing watched the sweep's timer is not re-armed."""

    loop = asyncio.new_event_loop()
    try:
        sweep = DeadlineSweep(loop, 0.02)
        due, later, none = Conn(), Conn(), Conn()
        for conn in (due, later, none):
            sweep.watch(conn)
        assert sweep._handle is not None  # armed by the first watch
        now = loop.time()
        due.deadline, later.deadline = now - 0.001, now + 60
        sweep._sweep()  # what the timer runs
        assert (due.fired, later.fired, none.fired) == (1, 0, 0)
        assert due.deadline == 0.0 and sweep._handle is not None
        sweep._sweep()
        assert due.fired == 1  # cleared: it does not fire twice
        for conn in (due, later, none):
            sweep.forget(conn)
        sweep._sweep()
        assert sweep._handle is None  # nothing watched: no timer
    finally:
        loop.close()


def test_listener_facts() -> None:
    """A listener bound to one address names it; a wildcard one leaves it to each
    connection; TLS is the listener's to say."""
    for host, expected in (("127.0.0.1", True), ("0.0.0.0", False)):
        with socket.socket() as sock:
            sock.bind((host, 0))
            facts = ListenerFacts.of(sock, tls=True)
            assert facts.tls
            if expected:
                assert facts.server == ("127.0.0.1", sock.getsockname()[1])
            else:
                assert facts.server is None
