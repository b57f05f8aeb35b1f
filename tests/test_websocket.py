"""WebSocket connections over real sockets, driven by the ``websockets`` client and raw sockets."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

import pytest
from corral.worker.state import ShutdownReason
from corral.worker.websocket import connection as websocket
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import Running, wait_for
from tests.ws_apps import Recorder


class Harness:
    """A running corral Server (see conftest), with WebSocket-test conveniences."""

    def __init__(self, running: Running) -> None:
        self.running = running
        self.port = running.port
        self.url = f"ws://127.0.0.1:{self.port}"
        self.state = running.server.state

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the server loop and return its result."""
        done = threading.Event()
        box: list[Any] = []

        def run() -> None:
            box.append(fn())
            done.set()

        assert self.running.loop is not None
        self.running.loop.call_soon_threadsafe(run)
        assert done.wait(10)
        return box[0]

    def connections(self) -> list[websocket.WebSocketConnection]:
        """The open WebSocket connections (HTTP connections left out)."""
        return self.call(  # type: ignore[no-any-return]
            lambda: [
                c for c in self.state.connections if isinstance(c, websocket.WebSocketConnection)
            ]
        )


@pytest.fixture
def serve(http_server: Callable[..., Running]) -> Callable[..., Harness]:
    """Start corral for the app and settings given, on both loops and both HTTP parsers."""

    def start(app: Any, **settings: Any) -> Harness:
        return Harness(http_server(app, **settings))

    return start


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


# --- raw-socket helpers ------------------------------------------------------------------
def handshake_bytes(path: str = "/", **overrides: str | None) -> bytes:
    headers = {
        "Host": "localhost",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
    }
    method = overrides.pop("method", None) or "GET"
    for name, value in overrides.items():
        key = name.replace("_", "-")
        if value is None:
            headers.pop(key, None)
        else:
            headers[key] = value
    lines = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A masked client frame."""
    mask = os.urandom(4)
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


class RawClient:
    """A blocking socket speaking just enough WebSocket to misbehave on purpose."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""

    def request(self, data: bytes) -> tuple[int, bytes]:
        """Send a handshake; return the status and the head."""
        self.sock.sendall(data)
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        return int(head.split(b" ")[1]), head

    def read_exact(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def read_frame(self) -> tuple[int, bytes]:
        b1, b2 = self.read_exact(2)
        n = b2 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self.read_exact(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self.read_exact(8))
        return b1 & 0x0F, self.read_exact(n)

    def read_close(self) -> int:
        """Skip frames until a close frame; return its code."""
        while True:
            opcode, payload = self.read_frame()
            if opcode == 8:
                return int(struct.unpack("!H", payload[:2])[0]) if payload else 1005

    def close(self) -> None:
        self.sock.close()


# --- the happy path ------------------------------------------------------------------------
def test_echo_text_and_binary(serve: Callable[..., Harness]) -> None:
    """Text and binary messages are echoed with their type."""
    server = serve(Recorder())

    async def scenario() -> None:
        async with connect(server.url + "/echo") as ws:
            await ws.send("hello ☃")
            assert await ws.recv() == "hello ☃"
            await ws.send(b"\x00\x01\xff")
            assert await ws.recv() == b"\x00\x01\xff"
            await ws.send("")
            assert await ws.recv() == ""

    run(scenario())


def test_scope(serve: Callable[..., Harness]) -> None:
    """The websocket scope follows ASGI 2.4: ws scheme, path, query, subprotocols, extensions."""
    import json

    server = serve(Recorder())

    async def scenario() -> dict[str, Any]:
        async with connect(server.url + "/scope?a=1&b=%20", subprotocols=["p1", "p2"]) as ws:
            return json.loads(await ws.recv())  # type: ignore[no-any-return]

    scope = run(scenario())
    assert scope["type"] == "websocket"
    assert scope["scheme"] == "ws"
    assert scope["path"] == "/scope"
    assert scope["query_string"] == "a=1&b=%20"
    assert scope["subprotocols"] == ["p1", "p2"]
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["extensions"] == {"websocket.http.response": {}}
    assert scope["has_state"]
    assert scope["client"][0] == "127.0.0.1"
    assert "method" not in scope


def test_subprotocol_negotiation(serve: Callable[..., Harness]) -> None:
    """The subprotocol chosen in websocket.accept is the one the client gets."""
    server = serve(Recorder())

    async def scenario() -> str | None:
        async with connect(server.url + "/subprotocol", subprotocols=["a", "b"]) as ws:
            return ws.subprotocol

    assert run(scenario()) == "b"


def test_accept_headers(serve: Callable[..., Harness]) -> None:
    """Extra headers in websocket.accept reach the 101 response, with Server and Date."""
    server = serve(Recorder())

    async def scenario() -> Any:
        async with connect(server.url + "/headers") as ws:
            assert ws.response is not None
            return ws.response.headers

    headers = run(scenario())
    assert headers["x-corral-test"] == "yes"
    assert headers["set-cookie"] == "a=1"
    assert headers["server"] == "corral"
    assert "date" in headers


# --- denial --------------------------------------------------------------------------------
def test_close_before_accept_is_403(serve: Callable[..., Harness]) -> None:
    """websocket.close before accept answers HTTP 403; the app then sees a disconnect."""
    app = Recorder()
    server = serve(app)

    async def scenario() -> int:
        with pytest.raises(InvalidStatus) as info:
            async with connect(server.url + "/deny"):
                pass
        return info.value.response.status_code

    assert run(scenario()) == 403
    (message,) = wait_for(lambda: app.seen("after_deny"))
    assert message["type"] == "websocket.disconnect"


def test_denial_response_extension(serve: Callable[..., Harness]) -> None:
    """websocket.http.response.* sends the app's own status, headers and streamed body."""
    server = serve(Recorder())

    async def scenario() -> Any:
        with pytest.raises(InvalidStatus) as info:
            async with connect(server.url + "/custom-deny"):
                pass
        return info.value.response

    response = run(scenario())
    assert response.status_code == 401
    assert response.headers["x-why"] == "token"
    assert response.headers["content-length"] == "8"
    assert response.body == b"no entry"


@pytest.mark.parametrize(
    ("overrides", "status"),
    [
        ({"Sec_WebSocket_Version": "8"}, 426),
        ({"Sec_WebSocket_Key": None}, 400),
        ({"Sec_WebSocket_Key": "not-base64!"}, 400),
        ({"Sec_WebSocket_Key": base64.b64encode(b"short").decode()}, 400),
        ({"method": "POST"}, 405),
    ],
)
def test_invalid_handshake_never_reaches_app(
    serve: Callable[..., Harness], overrides: dict[str, str | None], status: int
) -> None:
    """A handshake that is invalid on its own gets its 4xx without calling the app."""
    app = Recorder()
    server = serve(app)
    client = RawClient(server.port)
    try:
        code, head = client.request(handshake_bytes("/echo", **overrides))
    finally:
        client.close()
    assert code == status
    if status == 426:
        assert b"Sec-WebSocket-Version: 13" in head
    assert app.calls == 0


# --- closing -------------------------------------------------------------------------------
def test_server_close_code_and_reason(serve: Callable[..., Harness]) -> None:
    """The app's websocket.close code and reason reach the client; the app sees the echo."""
    app = Recorder()
    server = serve(app)

    async def scenario() -> tuple[int | None, str | None]:
        async with connect(server.url + "/close?code=4001&reason=bye") as ws:
            await ws.send("go")
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code, ws.close_reason

    assert run(scenario()) == (4001, "bye")
    (message,) = wait_for(lambda: app.seen("disconnect"))
    assert message["code"] == 4001


def test_client_close_code_and_reason(serve: Callable[..., Harness]) -> None:
    """The client's close code and reason arrive in websocket.disconnect."""
    app = Recorder()
    server = serve(app)

    async def scenario() -> None:
        async with connect(server.url + "/silent") as ws:
            await ws.close(4321, "client done")

    run(scenario())
    (message,) = wait_for(lambda: app.seen("disconnect"))
    assert message == {"type": "websocket.disconnect", "code": 4321, "reason": "client done"}


def test_disconnect_mid_message(serve: Callable[..., Harness]) -> None:
    """A peer vanishing in the middle of a fragmented message gives the app code 1006."""
    app = Recorder()
    server = serve(app)
    client = RawClient(server.port)
    assert client.request(handshake_bytes("/silent"))[0] == 101
    client.sock.sendall(frame(0x1, b"first half", fin=False))
    client.close()
    (message,) = wait_for(lambda: app.seen("disconnect"))
    assert message["code"] == 1006
    assert app.seen("received") == []


def test_app_exception_before_accept_is_500(serve: Callable[..., Harness]) -> None:
    """An app failing before accept answers 500."""
    server = serve(Recorder())

    async def scenario() -> int:
        with pytest.raises(InvalidStatus) as info:
            async with connect(server.url + "/crash"):
                pass
        return info.value.response.status_code

    assert run(scenario()) == 500


def test_app_exception_after_accept_closes_1011(serve: Callable[..., Harness]) -> None:
    """An app failing on an open WebSocket closes it with 1011."""
    server = serve(Recorder())

    async def scenario() -> int | None:
        async with connect(server.url + "/crash?when=open") as ws:
            await ws.send("x")
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code

    assert run(scenario()) == 1011


@pytest.mark.parametrize(
    ("reason", "code"), [(ShutdownReason.STOP, 1001), (ShutdownReason.RESTART, 1012)]
)
def test_shutdown_closes_with_reason_code(
    serve: Callable[..., Harness], reason: ShutdownReason, code: int
) -> None:
    """At the drain deadline open WebSockets close with 1001 (stop) or 1012 (restart)."""
    app = Recorder()
    server = serve(app)

    async def scenario() -> int | None:
        async with connect(server.url + "/silent") as ws:
            conns = server.connections()
            server.call(lambda: [c.start_drain() for c in conns])
            server.call(lambda: [c.shutdown_now(reason) for c in conns])
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code

    assert run(scenario()) == code
    (message,) = wait_for(lambda: app.seen("disconnect"))
    assert message["code"] == code
    wait_for(lambda: not server.connections())


# --- keepalive -----------------------------------------------------------------------------
def test_missing_pong_closes_1011(serve: Callable[..., Harness]) -> None:
    """A peer that never answers the keepalive ping is closed with 1011."""
    app = Recorder()
    server = serve(app, ws_ping_interval=0.05, ws_ping_timeout=0.05)
    client = RawClient(server.port)
    try:
        assert client.request(handshake_bytes("/silent"))[0] == 101
        opcode, _ = client.read_frame()
        assert opcode == 0x9  # the ping we ignore
        assert client.read_close() == 1011
    finally:
        client.close()
    (message,) = wait_for(lambda: app.seen("disconnect"))
    assert message["code"] == 1011


def test_answered_pings_keep_connection(serve: Callable[..., Harness]) -> None:
    """A peer answering pings stays connected across many ping intervals."""
    server = serve(Recorder(), ws_ping_interval=0.02, ws_ping_timeout=0.05)
    client = RawClient(server.port)
    try:
        assert client.request(handshake_bytes("/echo"))[0] == 101
        for _ in range(5):
            opcode, payload = client.read_frame()
            assert opcode == 0x9
            client.sock.sendall(frame(0xA, payload))
        client.sock.sendall(frame(0x1, b"still here"))
        while True:
            opcode, payload = client.read_frame()
            if opcode == 0x9:
                client.sock.sendall(frame(0xA, payload))
                continue
            assert (opcode, payload) == (0x1, b"still here")
            break
    finally:
        client.close()


def test_zero_ping_interval_disables_pings(serve: Callable[..., Harness]) -> None:
    """--ws-ping-interval 0 sends no pings (the first frame back is the echo)."""
    server = serve(Recorder(), ws_ping_interval=0)
    client = RawClient(server.port)
    try:
        assert client.request(handshake_bytes("/echo"))[0] == 101
        conn = server.connections()[0]
        assert not conn.keepalive.active
        client.sock.sendall(frame(0x2, b"abc"))
        assert client.read_frame() == (0x2, b"abc")
    finally:
        client.close()


# --- limits and validation -----------------------------------------------------------------
def test_message_over_max_size_closes_1009(serve: Callable[..., Harness]) -> None:
    """A message larger than --ws-max-size closes with 1009, also when fragmented."""
    server = serve(Recorder(), ws_max_size=1024)

    async def scenario(message: Any) -> int | None:
        async with connect(server.url + "/echo", max_size=None) as ws:
            await ws.send(message)
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code

    assert run(scenario(b"x" * 1025)) == 1009
    assert run(scenario([b"x" * 600, b"y" * 600])) == 1009


def test_message_at_max_size_is_delivered(serve: Callable[..., Harness]) -> None:
    """A message of exactly --ws-max-size bytes is delivered."""
    server = serve(Recorder(), ws_max_size=1024)

    async def scenario() -> bytes:
        async with connect(server.url + "/echo") as ws:
            await ws.send(b"z" * 1024)
            return await ws.recv()  # type: ignore[return-value]

    assert run(scenario()) == b"z" * 1024


def test_four_mib_in_64_byte_fragments(serve: Callable[..., Harness]) -> None:
    """A 4 MiB text message sent as 65,536 fragments of 64 bytes is reassembled whole."""
    server = serve(Recorder())
    piece = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-_"
    assert len(piece) == 64

    async def scenario() -> int:
        async with connect(server.url + "/echo", max_size=None, compression=None) as ws:
            await ws.send(piece for _ in range(65536))
            reply = await ws.recv()
            assert reply == piece * 65536
            return len(reply)

    assert run(scenario()) == 4 * 1024 * 1024


@pytest.mark.parametrize(
    "frames",
    [
        [frame(0x1, b"ok \xff bad")],
        [frame(0x1, b"ok", fin=False), frame(0x0, b"\xc3\x28", fin=False)],
        [frame(0x1, "é".encode()[:1], fin=True)],
    ],
    ids=["whole", "fragment", "truncated"],
)
def test_invalid_utf8_closes_1007(serve: Callable[..., Harness], frames: list[bytes]) -> None:
    """Text that is not UTF-8 closes with 1007, at the fragment that breaks it."""
    app = Recorder()
    server = serve(app)
    client = RawClient(server.port)
    try:
        assert client.request(handshake_bytes("/silent"))[0] == 101
        client.sock.sendall(b"".join(frames))
        assert client.read_close() == 1007
    finally:
        client.close()
    assert app.seen("received") == []


def test_utf8_split_across_fragments(serve: Callable[..., Harness]) -> None:
    """A character split between two fragments is reassembled."""
    server = serve(Recorder())
    client = RawClient(server.port)
    snowman = "☃".encode()
    try:
        assert client.request(handshake_bytes("/echo"))[0] == 101
        client.sock.sendall(frame(0x1, snowman[:1], fin=False) + frame(0x0, snowman[1:]))
        assert client.read_frame() == (0x1, snowman)
    finally:
        client.close()


@pytest.mark.parametrize("deflate", [True, False])
def test_permessage_deflate_negotiation(serve: Callable[..., Harness], deflate: bool) -> None:
    """permessage-deflate is negotiated only when --ws-per-message-deflate is true."""
    server = serve(Recorder(), ws_per_message_deflate=deflate)

    async def scenario() -> str | None:
        async with connect(server.url + "/echo", compression="deflate", max_size=None) as ws:
            for size in (10, 5000, 100_000):
                text = "compress me " * size
                await ws.send(text)
                assert await ws.recv() == text
            assert ws.response is not None
            return ws.response.headers.get("sec-websocket-extensions")

    extensions = run(scenario())
    if deflate:
        assert extensions is not None and extensions.startswith("permessage-deflate")
    else:
        assert extensions is None


def test_pipelined_frames_after_handshake(serve: Callable[..., Harness]) -> None:
    """Frames sent right behind the handshake request wait for accept, then are delivered."""
    server = serve(Recorder())
    client = RawClient(server.port)
    try:
        status, _ = client.request(handshake_bytes("/echo") + frame(0x1, b"early"))
        assert status == 101
        assert client.read_frame() == (0x1, b"early")
    finally:
        client.close()


# --- backpressure --------------------------------------------------------------------------
#: What one read from the socket can hold: asyncio and uvloop both read up to 256 KiB.
READ_CHUNK = 256 * 1024


def test_inbound_queue_bounded_then_reading_pauses(serve: Callable[..., Harness]) -> None:
    """While the app does not receive, at most --ws-max-queue messages (plus one read's worth)
    are held, reading pauses, and every message is delivered once the app receives again."""
    app = Recorder()
    server = serve(app, ws_max_queue=8)
    size, count = 16 * 1024, 512  # 8 MiB in all: far more than the kernel buffers hold
    client = RawClient(server.port)
    assert client.request(handshake_bytes("/no-read"))[0] == 101
    wait_for(lambda: app.seen("accepted"))
    conn = server.connections()[0]
    payloads = [b"%06d" % i + b"." * (size - 6) for i in range(count)]
    sender = threading.Thread(
        target=lambda: client.sock.sendall(b"".join(frame(0x2, p) for p in payloads)),
        daemon=True,
    )
    sender.start()
    try:
        wait_for(lambda: server.call(lambda: not conn.transport.is_reading()))
        held = server.call(lambda: len(conn.inbox))
        assert held <= 8 + READ_CHUNK // size + 1
        assert sender.is_alive()  # the client is blocked: the kernel buffers are full
        server.call(lambda: app.release.set())  # type: ignore[union-attr]
        for expected in payloads:
            assert client.read_frame() == (0x2, expected)
        sender.join(10)
    finally:
        client.close()


def test_send_waits_for_slow_reader_and_fails_once_gone(serve: Callable[..., Harness]) -> None:
    """A client that never reads does not grow the server's write buffer past the high-water
    mark plus one message; once it disconnects, the blocked send fails promptly."""
    app = Recorder()
    server = serve(app, ws_ping_interval=0)
    client = RawClient(server.port)
    assert client.request(handshake_bytes("/flood"))[0] == 101
    wait_for(lambda: app.seen("sent"))
    conn = server.connections()[0]
    wait_for(lambda: server.call(lambda: conn.write_paused))
    _, high = server.call(lambda: conn.transport.get_write_buffer_limits())
    for _ in range(20):
        buffered = server.call(lambda: conn.transport.get_write_buffer_size())
        assert buffered <= high + 65536 + 14
    sent = len(app.seen("sent"))
    assert sent < 1000  # 64 MiB would mean no backpressure at all
    client.close()
    assert wait_for(lambda: app.seen("send_failed")) == ["ClientDisconnected"]


def test_server_stop_closes_1001_and_app_sees_disconnect(serve: Callable[..., Harness]) -> None:
    """Stopping the server closes open WebSockets with 1001 at the drain deadline, and the app
    receives websocket.disconnect (not a cancellation)."""
    app = Recorder()
    server = serve(app, timeout_graceful_shutdown=0.05)

    async def scenario() -> int | None:
        async with connect(server.url + "/silent") as ws:
            await ws.send("before")
            wait_for(lambda: app.seen("received"))
            stopper = threading.Thread(target=server.running.stop)
            stopper.start()
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            stopper.join(10)
            return ws.close_code

    assert run(scenario()) == 1001
    assert [m["code"] for m in app.seen("disconnect")] == [1001]


def test_limit_concurrency_counts_websockets(serve: Callable[..., Harness]) -> None:
    """An open WebSocket counts toward --limit-concurrency: the next upgrade gets 503."""
    server = serve(Recorder(), limit_concurrency=1)

    async def scenario() -> int:
        async with connect(server.url + "/echo") as ws:
            await ws.send("x")
            await ws.recv()
            with pytest.raises(InvalidStatus) as info:
                async with connect(server.url + "/echo"):
                    pass
            return info.value.response.status_code

    assert run(scenario()) == 503


def test_ws_none_serves_upgrades_as_http(serve: Callable[..., Harness]) -> None:
    """With --ws none an upgrade request is an ordinary HTTP request for the app."""
    server = serve(Recorder(), ws="none")
    client = RawClient(server.port)
    try:
        status, _ = client.request(handshake_bytes("/echo"))
    finally:
        client.close()
    assert status == 200


def test_message_before_protocol_error_is_answered_first(serve: Callable[..., Harness]) -> None:
    """A valid message arriving together with a broken frame is echoed before the 1002 close."""
    server = serve(Recorder())
    client = RawClient(server.port)
    try:
        assert client.request(handshake_bytes("/echo"))[0] == 101
        client.sock.sendall(frame(0x1, b"hello") + frame(0x7, b"reserved opcode"))
        assert client.read_frame() == (0x1, b"hello")
        assert client.read_close() == 1002
    finally:
        client.close()
