"""Flow control both ways and client disconnects, asserted on server state, not timing."""

from __future__ import annotations

import threading

import httpx
import pytest
from corral.worker.transport.base import PAUSE_BODY, READ_HIGH_WATER

from tests import apps
from tests.apps import Gate, Recorder
from tests.conftest import RawClient, get, wait_for

#: The most one socket read can add past the high-water mark (asyncio and uvloop read
#: at most 256 KiB at a time).
READ_SLACK = 256 * 1024


def test_unread_request_body_pauses_reading(http_server):
    """A client uploading faster than the app reads makes the server pause, not buffer."""
    gate = Gate()
    server = http_server(apps.gated_reader(gate))
    size = 16 * 1024 * 1024
    with RawClient(server.port) as raw:
        raw.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size)
        sender = threading.Thread(target=raw.send, args=(b"x" * size,), daemon=True)
        sender.start()
        conn = wait_for(lambda: server.connections and server.connections[0])
        wait_for(lambda: conn.read_paused & PAUSE_BODY, message="reading to pause")
        cycle = conn._active
        assert cycle is not None
        assert cycle.buffered <= READ_HIGH_WATER + READ_SLACK
        assert sender.is_alive()  # the client is blocked by TCP backpressure
        gate.open()
        response = raw.read_response()
        sender.join(10)
    assert response.body == str(size).encode()


@pytest.mark.smoke
def test_slow_reader_bounds_response_buffer(http_server):
    """A client that doesn't read makes send() wait: the write buffer stays bounded."""
    sent = Recorder()
    total = 32 * 1024 * 1024
    server = http_server(apps.streamer(total, recorder=sent))
    with RawClient(server.port) as raw:
        raw.send(get())
        conn = wait_for(lambda: server.connections and server.connections[0])
        wait_for(lambda: conn.write_paused, message="writing to pause")
        assert conn.transport.get_write_buffer_size() <= 1024 * 1024
        assert sent.snapshot()[-1] < total  # the app is held back, not finished
        response = raw.read_response()
    assert len(response.body) == total


def test_large_stream_reaches_client(http_server):
    """A 1 MiB streamed response arrives whole through a normal client."""
    server = http_server(apps.streamer(1024 * 1024, piece=16384))
    with httpx.stream("GET", server.url()) as response:
        assert sum(len(piece) for piece in response.iter_bytes()) == 1024 * 1024


def test_disconnect_mid_body(http_server):
    """A client leaving mid-upload makes receive() return http.disconnect."""
    seen = Recorder()
    server = http_server(apps.disconnect_watcher(seen))
    with RawClient(server.port) as raw:
        raw.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n0123456789")
        wait_for(lambda: "http.request" in seen, message="the first body piece")
    wait_for(lambda: "http.disconnect" in seen, message="http.disconnect")


def test_disconnect_mid_response(http_server):
    """A client leaving mid-response: receive() gives http.disconnect, send() raises OSError."""
    seen = Recorder()
    server = http_server(apps.disconnect_watcher(seen, respond_first=True))
    with RawClient(server.port) as raw:
        raw.send(get())
        raw.read_until(b"first")
    wait_for(lambda: "http.disconnect" in seen, message="http.disconnect")
    wait_for(lambda: "send-raised" in seen, message="send() to raise")
    wait_for(lambda: not server.server.state.tasks, message="the app task to end")


def test_disconnect_after_response_complete(http_server):
    """After the response is complete, receive() returns http.disconnect at once."""
    seen = Recorder()

    async def app(scope, receive, send):
        await apps.respond(send, b"ok")
        seen.add((await receive())["type"])
        seen.add((await receive())["type"])

    server = http_server(app)
    assert httpx.get(server.url()).text == "ok"
    wait_for(lambda: len(seen.snapshot()) == 2)
    assert seen.snapshot() == ["http.disconnect", "http.disconnect"]


@pytest.mark.parametrize("size", [150_000, 2 * 1024 * 1024])
def test_unread_body_is_dropped_and_connection_reused(http_server, size):
    """A large body the app never reads doesn't stall the connection's next request."""
    server = http_server(apps.echo_path_only)
    with RawClient(server.port) as raw:
        request = b"POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size
        sender = threading.Thread(target=raw.send, args=(request + b"x" * size,))
        sender.start()
        assert raw.read_response().body == b"/big"
        sender.join(10)
        raw.send(get("/next"))  # arrives in a later read: reading must have resumed
        assert raw.read_response().body == b"/next"
