"""The transport base shared by HTTP and WebSocket connections, without sockets: read pausing
by reason, the senders' wait, the stall guard's arming, and the end of a connection."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from corral.worker.transport.base import (
    PAUSE_BODY,
    PAUSE_PIPELINE,
    PAUSE_WRITE,
    ClientDisconnected,
    TransportBase,
)

from tests.conftest import FakeTransport


class Conn(TransportBase):
    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_send: float = 60.0) -> None:
        self._loop = loop
        self.stand_in = FakeTransport()
        self.attach(self.stand_in, timeout_send)  # type: ignore[arg-type]

    @property
    def client_text(self) -> str:
        return "192.0.2.1:5000"


class PausingConn(Conn):
    pause_reading_with_writing = True


@pytest.fixture
def loop() -> Any:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def test_reading_resumes_only_when_no_reason_is_left(loop: Any) -> None:
    conn = Conn(loop)
    conn.pause_reading(PAUSE_BODY)
    conn.pause_reading(PAUSE_PIPELINE)
    conn.resume_reading(PAUSE_BODY)
    assert not conn.stand_in.reading
    conn.resume_reading(PAUSE_BODY)  # not in force any more: nothing happens
    conn.resume_reading(PAUSE_PIPELINE)
    assert conn.stand_in.calls == ["pause", "resume"]  # one call each way, not per reason


def test_no_resume_on_a_closing_or_lost_transport(loop: Any) -> None:
    conn = Conn(loop)
    conn.pause_reading(PAUSE_BODY)
    conn.stand_in.closed = True
    conn.resume_reading(PAUSE_BODY)
    lost = Conn(loop)
    lost.transport_lost()
    lost.pause_reading(PAUSE_BODY)
    lost.resume_reading(PAUSE_BODY)
    assert conn.stand_in.calls == ["pause"] and lost.stand_in.calls == []


def test_write_pause_gates_reading_only_when_the_protocol_asks(loop: Any) -> None:
    plain, gated = Conn(loop), PausingConn(loop)
    for conn in (plain, gated):
        conn.pause_writing()
    assert plain.stand_in.reading and plain.read_paused == 0
    assert not gated.stand_in.reading and gated.read_paused == PAUSE_WRITE
    gated.resume_writing()
    assert gated.stand_in.reading and gated.read_paused == 0


def test_drain_waits_for_resume_and_fails_once_lost(loop: Any) -> None:
    async def scenario() -> list[str]:
        conn = Conn(loop)
        await conn.drain()  # not paused: returns at once
        conn.pause_writing()
        first = asyncio.ensure_future(conn.drain())
        second = asyncio.ensure_future(conn.drain())
        await asyncio.sleep(0)
        assert not first.done() and not second.done()
        conn.resume_writing()
        await asyncio.gather(first, second)
        conn.pause_writing()
        waiting = asyncio.ensure_future(conn.drain())
        await asyncio.sleep(0)
        conn.transport_lost()
        outcome = []
        for attempt in (waiting, asyncio.ensure_future(conn.drain())):
            try:
                await attempt
                outcome.append("returned")
            except ClientDisconnected:
                outcome.append("ClientDisconnected")
        return outcome

    assert loop.run_until_complete(scenario()) == ["ClientDisconnected", "ClientDisconnected"]


def test_cancelling_one_sender_releases_no_other(loop: Any) -> None:
    async def scenario() -> None:
        conn = Conn(loop)
        conn.pause_writing()
        cancelled = asyncio.ensure_future(conn.drain())
        other = asyncio.ensure_future(conn.drain())
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.sleep(0)
        assert cancelled.cancelled() and not other.done()
        conn.resume_writing()
        await asyncio.wait_for(other, 1)

    loop.run_until_complete(scenario())


def test_stall_guard_is_made_only_when_the_buffer_fills(loop: Any) -> None:
    conn = Conn(loop)
    conn.resume_writing()  # spurious resume: still no guard
    assert conn._stall is None
    conn.pause_writing()
    guard = conn._stall
    assert guard is not None and guard._handle is not None
    conn.resume_writing()
    assert guard._handle is None


def test_close_with_bytes_queued_stays_watched(loop: Any) -> None:
    """A closing transport is watched until its buffer is empty, even past a resume."""
    empty, queued = Conn(loop), Conn(loop)
    empty.close_transport()
    assert empty._stall is None
    queued.stand_in.buffered = 1000
    queued.close_transport()
    guard = queued._stall
    assert guard is not None and guard._handle is not None
    queued.resume_writing()
    assert guard._handle is not None
    queued.transport_lost()
    assert guard._handle is None


def test_disabled_guard_never_arms(loop: Any) -> None:
    conn = Conn(loop, timeout_send=0)
    conn.pause_writing()
    assert conn._stall is not None and conn._stall._handle is None


def test_abort_resets_once(loop: Any) -> None:
    conn = Conn(loop)
    conn.abort()
    conn.transport_lost()
    conn.abort()
    assert conn.stand_in.calls == ["abort"]


def test_release_transport_resumes_reading_and_stops_watching(loop: Any) -> None:
    conn = Conn(loop)
    conn.pause_reading(PAUSE_PIPELINE | PAUSE_BODY)
    conn.pause_writing()
    conn.release_transport()
    assert conn.stand_in.reading and conn.read_paused == 0
    assert conn._stall is not None and conn._stall._handle is None


def test_parts_are_written_one_by_one_or_joined_off_uvloop(loop: Any) -> None:
    conn = Conn(loop)
    conn.write_parts([b"head", b"body"])
    conn.write_batch([b"a", b"b", b"c"])
    assert conn.stand_in.writes == [b"head", b"body", b"abc"]
