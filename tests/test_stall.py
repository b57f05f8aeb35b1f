"""Slow-read protection (--timeout-send): a client that reads nothing is cut off."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
from typing import Any

import pytest
from corral.worker.transport.stall import Progress, StallGuard, progress

from tests.apps import Recorder
from tests.conftest import DEADLINE, FakeTransport, RawClient, get, wait_for

BIG = 8 * 1024 * 1024  # far more than the kernel's socket buffers hold on loopback


# --- the decision, and the guard with a stand-in transport -----------------------------------
@pytest.mark.parametrize(
    ("before", "now", "verdict"),
    [
        (5000, 0, Progress.DRAINED),
        (5000, 4999, Progress.MOVING),
        (5000, 5000, Progress.STALLED),
        (5000, 9000, Progress.STALLED),  # grew: more was queued, none was read
    ],
)
def test_progress(before: int, now: int, verdict: Progress) -> None:
    assert progress(before, now) is verdict


def test_guard_keeps_a_slow_reader_and_cuts_a_stalled_one() -> None:
    """Each look that finds the buffer smaller re-arms; the first that does not aborts."""
    loop = asyncio.new_event_loop()
    try:
        transport = FakeTransport()
        transport.buffered = 3000
        guard = StallGuard(loop, transport, 60.0, "203.0.113.9:4000")  # type: ignore[arg-type]
        guard.watch()
        for size in (2000, 1000):  # the client read a little before each look
            transport.buffered = size
            guard._check()
            assert "abort" not in transport.calls and guard._handle is not None
        guard._check()  # nothing read since the last look
        assert transport.calls == ["abort"] and guard._handle is None
    finally:
        loop.close()


def test_guard_disabled_never_arms() -> None:
    """(An idle connection never makes a guard at all: tests/test_transport.py.)"""
    loop = asyncio.new_event_loop()
    try:
        StallGuard(loop, FakeTransport(), 0.0, "").watch()  # type: ignore[arg-type]
        assert not loop._scheduled  # type: ignore[attr-defined]
    finally:
        loop.close()


# --- end to end --------------------------------------------------------------------------------
def non_reader(port: int) -> socket.socket:
    """A client with a small receive buffer that will never read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    return sock


def ends_with_reset(sock: socket.socket) -> bool:
    """Read what arrived until the stream ends: True for a reset, False for a clean EOF."""
    sock.settimeout(DEADLINE)
    try:
        while sock.recv(1 << 20):
            pass
    except ConnectionResetError:
        return True
    return False


def big_response(recorder: Recorder, *, streamed: bool) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = [(b"content-length", str(BIG).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        piece = 256 * 1024 if streamed else BIG
        try:
            for sent in range(piece, BIG + 1, piece):
                await send(
                    {"type": "http.response.body", "body": b"x" * piece, "more_body": sent < BIG}
                )
        except OSError as exc:
            recorder.add(type(exc).__name__)
            return
        recorder.add("complete")

    return app


@pytest.mark.parametrize("streamed", [False, True], ids=["one-body", "streamed"])
def test_client_that_reads_nothing_is_cut_off(
    http_server: Any, caplog: pytest.LogCaptureFixture, streamed: bool
) -> None:
    """One body handed over whole (the connection then closes with bytes queued) or a
    streamed one (the app waits in send()): either way the connection goes after
    --timeout-send, with one log line, and a waiting app gets ClientDisconnected."""
    seen = Recorder()
    app = big_response(seen, streamed=streamed)
    server = http_server(app, timeout_send=0.3, timeout_keep_alive=0.1)
    caplog.set_level(logging.INFO, logger="corral.error")  # after the server set its levels
    with non_reader(server.port) as sock:
        sock.sendall(get())
        wait_for(lambda: seen.snapshot(), message="the app to finish or fail")
        wait_for(lambda: not server.connections, message="the stalled connection to go")
        assert ends_with_reset(sock)  # the unsent bytes were dropped, not trickled out
    assert seen.snapshot() == (["ClientDisconnected"] if streamed else ["complete"])
    lines = [r.getMessage() for r in caplog.records if "read nothing" in r.getMessage()]
    assert len(lines) == 1 and "connection aborted" in lines[0]


def test_reading_client_is_not_cut_off(http_server: Any) -> None:
    """A client that reads gets the whole body, even with a short --timeout-send."""
    seen = Recorder()
    server = http_server(big_response(seen, streamed=True), timeout_send=0.3)
    with RawClient(server.port) as client:
        client.send(get())
        assert len(client.read_response().body) == BIG
    assert seen.snapshot() == ["complete"]


#: Every time ``flood`` saw its send fail (shared by the stacks; compared by count).
FLOOD_ENDED = Recorder()


async def flood(scope: Any, receive: Any, send: Any) -> None:
    """Accepts a WebSocket and sends until sending fails."""
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    try:
        while True:
            await send({"type": "websocket.send", "bytes": b"x" * 65536})
    except OSError:
        FLOOD_ENDED.add("ClientDisconnected")


def test_websocket_client_that_reads_nothing_is_cut_off(http_server: Any) -> None:
    """With pings off nothing else would notice: the guard ends the connection."""
    server = http_server(flood, ws_ping_interval=0, timeout_send=0.3)
    start = len(FLOOD_ENDED.snapshot())
    key = base64.b64encode(os.urandom(16))
    with non_reader(server.port) as sock:
        sock.sendall(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        wait_for(lambda: len(FLOOD_ENDED.snapshot()) > start, message="the app's send to fail")
        wait_for(lambda: not server.connections, message="the stalled connection to go")
