"""The HTTP/1.1 protocol driven without sockets: a fake transport records what it is told."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from corral.config import Config
from corral.worker.http1.parsers import ParserLimits
from corral.worker.http1.protocol import DRAIN_GRACE, ConnState, HTTP1Protocol
from corral.worker.state import ServerState

from tests import apps
from tests.conftest import FakeTransport


async def run_protocol(
    app: Any, steps: Callable[[HTTP1Protocol, FakeTransport], Awaitable[None]], **settings: Any
) -> None:
    config = Config(app=app, lifespan="off", access_log=False, **settings)
    state = ServerState(config, app)
    loop = asyncio.get_running_loop()
    protocol = HTTP1Protocol(state, ParserLimits.from_config(config), loop)
    transport = FakeTransport()
    protocol.connection_made(transport)
    try:
        await steps(protocol, transport)
    finally:
        protocol.connection_lost(None)


async def settle() -> None:
    """Let the app tasks run until they wait or finish."""
    for _ in range(20):
        await asyncio.sleep(0)


def test_reading_resumes_after_unread_body_response():
    """A body buffered past the mark and never read doesn't leave reading paused."""

    async def steps(protocol: HTTP1Protocol, transport: FakeTransport) -> None:
        body = b"x" * 150_000
        protocol.data_received(
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 150000\r\n\r\n" + body
        )
        # Paused once more than the high-water mark was unread (the app, run at once, may
        # already have answered and resumed it).
        assert transport.pauses == 1
        await settle()
        assert transport.written.startswith(b"HTTP/1.1 200 OK")
        assert transport.reading  # the app answered without reading: resume for the next
        assert protocol._st is ConnState.IDLE

    asyncio.run(run_protocol(apps.echo_path_only, steps))


def test_pipelined_requests_queue_and_pause():
    """A second pipelined request waits in the queue with reading paused, then runs."""
    gate = apps.Gate()

    async def steps(protocol: HTTP1Protocol, transport: FakeTransport) -> None:
        protocol.data_received(
            b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\nGET /fast HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        await settle()
        assert len(protocol._queue) == 1
        assert not transport.reading
        gate.open()
        await settle()
        assert transport.written.count(b"HTTP/1.1 200 OK") == 2
        assert transport.written.index(b"done/slow") < transport.written.index(b"done/fast")
        assert transport.reading

    asyncio.run(run_protocol(apps.gated(gate), steps))


def test_bad_request_answers_and_lingers():
    """A malformed request gets 400, then a half-close that keeps draining input."""

    async def steps(protocol: HTTP1Protocol, transport: FakeTransport) -> None:
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n")
        assert transport.written.startswith(b"HTTP/1.1 400 ")
        assert transport.eof_written and not transport.closed
        protocol.data_received(b"more bytes the client was still sending")  # ignored
        assert transport.written.count(b"HTTP/1.1") == 1

    asyncio.run(run_protocol(apps.hello, steps))


@pytest.mark.parametrize("first", [b"GET / HTTP/1.1\r\n", b""])
def test_drain_answers_next_request_with_close(first):
    """start_drain on an idle or mid-head keep-alive connection still answers the client's
    next request (with Connection: close) instead of resetting it."""

    async def steps(protocol: HTTP1Protocol, transport: FakeTransport) -> None:
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        await settle()
        if first:
            protocol.data_received(first)  # part of a next head
        protocol.start_drain()
        assert not transport.closed
        rest = b"Host: t\r\n\r\n" if first else b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
        protocol.data_received(rest)
        await settle()
        assert transport.written.count(b"HTTP/1.1 200 OK") == 2
        assert transport.written.rstrip().endswith(b"Hello, world!")
        assert b"connection: close" in transport.written.split(b"HTTP/1.1 200 OK")[2].lower()
        assert transport.closed

    asyncio.run(run_protocol(apps.hello, steps))


def test_drain_closes_silent_idle_connection_after_grace():
    """An idle keep-alive connection that sends nothing more is closed after the drain grace."""

    async def steps(protocol: HTTP1Protocol, transport: FakeTransport) -> None:
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        await settle()
        protocol.start_drain()
        assert not transport.closed
        assert 0 < protocol.deadline - asyncio.get_running_loop().time() <= DRAIN_GRACE
        protocol.deadline = 0.0
        protocol.on_deadline()  # what the sweep runs once the grace has passed
        assert transport.closed


def test_websocket_upgrade_while_draining_gets_503():
    """A WebSocket upgrade on a draining connection is refused with 503 and close, not
    accepted only to be cut at the drain deadline."""

    async def steps(protocol: HTTP1Protocol, transport: FakeTransport) -> None:
        protocol.start_drain()
        protocol.data_received(
            b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await settle()
        assert transport.written.startswith(b"HTTP/1.1 503 ")
        assert b"connection: close" in transport.written.lower()
        assert transport.closed

    asyncio.run(run_protocol(apps.hello, steps))


def test_streamed_chunks_of_one_loop_turn_go_out_in_one_write():
    """Chunks an app streams without awaiting anything else leave in one write at the end of
    the loop turn (not one write each), before the app's next wait ends, and in order."""
    release = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for piece in (b"one", b"two", b"three"):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await release.wait()
        await send({"type": "http.response.body", "body": b"four", "more_body": False})

    async def steps(protocol: HTTP1Protocol, transport: FakeTransport) -> None:
        writes: list[bytes] = []
        original = transport.write

        def counting_write(data: Any) -> None:
            writes.append(bytes(data))
            original(data)

        transport.write = counting_write  # type: ignore[method-assign]
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        await settle()
        assert not release.is_set()  # the app is still waiting: the chunks went out anyway
        assert len(writes) == 2  # the head with the first chunk, then the other two together
        assert b"3\r\none\r\n" in writes[0]
        assert writes[1] == b"3\r\ntwo\r\n5\r\nthree\r\n"
        release.set()
        await settle()
        assert transport.written.endswith(b"4\r\nfour\r\n0\r\n\r\n")

    asyncio.run(run_protocol(app, steps))


def test_app_answering_at_once_needs_no_task_or_loop_turn():
    """An app that answers without waiting is run and written within data_received: the
    response is out before the loop turns, and no task is left in flight."""

    async def steps(protocol: HTTP1Protocol, transport: FakeTransport) -> None:
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert transport.written.startswith(b"HTTP/1.1 200 OK")  # no await in between
        assert not protocol.state.tasks
        assert protocol._st is ConnState.IDLE and protocol.deadline > 0  # keep-alive clock

    asyncio.run(run_protocol(apps.hello, steps))


def test_app_that_waits_keeps_one_task_from_its_first_line():
    """An app started at once that then waits carries on as one ordinary task, counted in
    flight, and asyncio.current_task() is that task before and after its first wait."""
    seen: list[object] = []
    release = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(asyncio.current_task())
        await release.wait()
        seen.append(asyncio.current_task())
        await apps.hello(scope, receive, send)

    async def steps(protocol: HTTP1Protocol, transport: FakeTransport) -> None:
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert len(seen) == 1 and seen[0] is not None  # the first step ran at once
        assert list(protocol.state.tasks) == seen
        release.set()
        await settle()
        assert seen[0] is seen[1]
        assert transport.written.startswith(b"HTTP/1.1 200 OK")
        assert not protocol.state.tasks

    asyncio.run(run_protocol(app, steps))


def test_long_pipeline_in_one_read_is_answered_in_order():
    """Thousands of pipelined requests in one read are answered in order, without the
    apps (run at once) nesting into each other."""

    async def steps(protocol: HTTP1Protocol, transport: FakeTransport) -> None:
        protocol.data_received(
            b"".join(b"GET /%d HTTP/1.1\r\nHost: t\r\n\r\n" % i for i in range(3000))
        )
        await settle()
        assert transport.written.count(b"HTTP/1.1 200 OK") == 3000
        assert transport.reading

    asyncio.run(run_protocol(apps.hello, steps))
