"""WebSocket logic without sockets: handshake validation, scope, responses, reassembly, and
the connection driven through a fake transport."""

from __future__ import annotations

import asyncio
import base64
import os
from typing import Any

import pytest
from corral.config import Config
from corral.worker.state import ServerState, ShutdownReason
from corral.worker.websocket import connection as websocket
from corral.worker.websocket import handshake as ws_handshake
from corral.worker.websocket.messages import MessageAssembler
from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import BINARY, CONT, PING, TEXT, Frame

from tests.conftest import FakeTransport


def http_scope(**overrides: Any) -> dict[str, Any]:
    headers = {
        b"host": b"example.com",
        b"upgrade": b"websocket",
        b"connection": b"Upgrade",
        b"sec-websocket-key": base64.b64encode(os.urandom(16)),
        b"sec-websocket-version": b"13",
    }
    extra_headers = overrides.pop("extra_headers", [])
    for name in overrides.pop("drop", []):
        headers.pop(name)
    headers.update(overrides.pop("set", {}))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/chat",
        "raw_path": b"/chat",
        "query_string": b"room=1",
        "root_path": "",
        "headers": list(headers.items()) + extra_headers,
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
        "state": {"db": "pool"},
        "extensions": {},
    }
    scope.update(overrides)
    return scope


def validate(config: Config | None = None, **overrides: Any) -> Any:
    config = config or Config()
    return ws_handshake.validate(
        http_scope(**overrides), config, ws_handshake.extension_factories(config)
    )


# --- handshake validation --------------------------------------------------------------------
def test_valid_handshake_gives_101_template() -> None:
    """A well-formed upgrade request validates to a 101 template with the accept key."""
    _, response = validate()
    assert response.status_code == 101
    assert "Sec-WebSocket-Accept" in response.headers


@pytest.mark.parametrize(
    ("overrides", "status"),
    [
        ({"set": {b"sec-websocket-version": b"8"}}, 426),
        ({"drop": [b"sec-websocket-version"]}, 400),
        ({"drop": [b"sec-websocket-key"]}, 400),
        ({"set": {b"sec-websocket-key": b"%%%"}}, 400),
        ({"set": {b"sec-websocket-key": base64.b64encode(b"15 bytes only!!")}}, 400),
        ({"method": "POST"}, 405),
        ({"drop": [b"connection"]}, 426),
        ({"set": {b"sec-websocket-protocol": b"bad token,"}}, 400),
    ],
    ids=[
        "version",
        "no-version",
        "no-key",
        "bad-key",
        "short-key",
        "post",
        "no-connection",
        "bad-subprotocol",
    ],
)
def test_invalid_handshakes(overrides: dict[str, Any], status: int) -> None:
    """Invalid handshakes are answered by corral with the status RFC 6455 asks for."""
    _, response = validate(**overrides)
    assert response.status_code == status
    if "version" in str(overrides):
        assert response.headers["Sec-WebSocket-Version"] == "13"
    assert response.headers["Connection"] == "close"


def test_deflate_negotiated_only_when_enabled() -> None:
    """permessage-deflate is accepted when offered and enabled, never when disabled."""
    offer = {b"sec-websocket-extensions": b"permessage-deflate; client_max_window_bits"}
    ws, response = validate(set=offer)
    assert response.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
    assert [e.name for e in ws.extensions] == ["permessage-deflate"]
    ws, response = validate(Config(ws_per_message_deflate=False), set=offer)
    assert "Sec-WebSocket-Extensions" not in response.headers
    assert ws.extensions == []


def test_max_size_is_corral_default() -> None:
    """The protocol enforces corral's 16 MiB default, not websockets' 1 MiB: a frame of
    exactly 16 MiB is read, one byte more is refused with 1009 from its header alone."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await receive()

    def header(size: int) -> bytes:
        return b"\x82\xff" + size.to_bytes(8, "big") + b"\0\0\0\0"

    async def scenario() -> None:
        for size, closed in ((16 * 1024 * 1024, False), (16 * 1024 * 1024 + 1, True)):
            conn, transport, _ = await open_connection(app, ws_ping_interval=0)
            conn.data_received(header(size))
            assert (b"\x88\x11\x03\xf1message too big" in transport.written) is closed
            conn.connection_lost(None)

    asyncio.run(scenario())


# --- scope -----------------------------------------------------------------------------------
def test_websocket_scope_fields() -> None:
    """The websocket scope carries the request's path, query, headers, state and subprotocols."""
    source = http_scope(
        scheme="https",
        extensions={"tls": {"tls_version": 0x304}},
        extra_headers=[
            (b"sec-websocket-protocol", b"chat, json"),
            (b"sec-websocket-protocol", b"x"),
        ],
    )
    scope = ws_handshake.websocket_scope(source)
    assert scope["type"] == "websocket"
    assert scope["scheme"] == "wss"
    assert scope["subprotocols"] == ["chat", "json", "x"]
    assert scope["extensions"] == {"tls": {"tls_version": 0x304}, "websocket.http.response": {}}
    assert scope["state"] is source["state"]
    assert (scope["path"], scope["raw_path"], scope["query_string"]) == (
        "/chat",
        b"/chat",
        b"room=1",
    )
    assert "method" not in scope


# --- responses -------------------------------------------------------------------------------
def test_accept_response_with_subprotocol_and_headers() -> None:
    """The 101 has the handshake headers, the subprotocol, the app's headers and defaults."""
    _, template = validate()
    head = ws_handshake.accept_response(
        template,
        {"type": "websocket.accept", "subprotocol": "chat", "headers": [(b"X-A", b"1")]},
        [(b"server", b"corral"), (b"date", b"Tue, 24 Nov 2026 21:46:48 GMT")],
    )
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert head.endswith(b"\r\n\r\n")
    for line in (
        b"upgrade: websocket",
        b"sec-websocket-protocol: chat",
        b"x-a: 1",
        b"server: corral",
    ):
        assert line + b"\r\n" in head


def test_accept_subprotocol_from_header() -> None:
    """A sec-websocket-protocol header in accept is honoured when no subprotocol key is given."""
    _, template = validate()
    head = ws_handshake.accept_response(
        template, {"type": "websocket.accept", "headers": [(b"sec-websocket-protocol", b"v2")]}, []
    )
    assert head.count(b"sec-websocket-protocol") == 1
    assert b"sec-websocket-protocol: v2\r\n" in head


@pytest.mark.parametrize("header", [(b"x-a", b"1\r\nInjected: yes"), (b"bad name", b"1")])
def test_accept_rejects_unsafe_headers(header: tuple[bytes, bytes]) -> None:
    """Header names and values that could split the response are refused."""
    _, template = validate()
    with pytest.raises(ws_handshake.HandshakeError):
        ws_handshake.accept_response(template, {"headers": [header]}, [])


def test_denial_response_framing() -> None:
    """The app's denial response gets Content-Length and Connection: close from corral."""
    raw = ws_handshake.denial_response(
        404, [(b"content-length", b"999"), (b"x-a", b"b")], b"gone", [(b"server", b"corral")]
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert b"content-length: 4" in head and b"999" not in head
    assert b"connection: close" in head
    assert body == b"gone"
    with pytest.raises(ws_handshake.HandshakeError):
        ws_handshake.denial_response(101, [], b"", [])


# --- reassembly ------------------------------------------------------------------------------
def test_assembler_whole_messages() -> None:
    """Unfragmented frames become messages with exactly one of text or bytes."""
    assembler = MessageAssembler()
    assert assembler.feed(Frame(TEXT, b"hi")) == {"type": "websocket.receive", "text": "hi"}
    assert assembler.feed(Frame(BINARY, b"\x00")) == {"type": "websocket.receive", "bytes": b"\x00"}
    assert assembler.feed(Frame(PING, b"")) is None


def test_assembler_fails_fast_on_invalid_utf8() -> None:
    """An invalid byte raises at the fragment carrying it, before the message ends."""
    assembler = MessageAssembler()
    assert assembler.feed(Frame(TEXT, b"ok", fin=False)) is None
    with pytest.raises(UnicodeDecodeError):
        assembler.feed(Frame(CONT, b"\xed\xa0\x80", fin=False))  # a UTF-16 surrogate


def test_assembler_truncated_text_at_end() -> None:
    """A message ending inside a multi-byte character is invalid."""
    assembler = MessageAssembler()
    assembler.feed(Frame(TEXT, b"\xe2\x98", fin=False))
    with pytest.raises(UnicodeDecodeError):
        assembler.feed(Frame(CONT, b"", fin=True))


@given(st.text(), st.lists(st.integers(min_value=0, max_value=64), max_size=20))
def test_assembler_any_fragmentation(text: str, cuts: list[int]) -> None:
    """Any split of UTF-8 text into fragments, even inside characters, reassembles exactly."""
    data = text.encode()
    points = sorted({min(c, len(data)) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assembler = MessageAssembler()
    result = None
    for i, piece in enumerate(pieces):
        opcode = TEXT if i == 0 else CONT
        result = assembler.feed(Frame(opcode, piece, fin=i == len(pieces) - 1))
    assert result == {"type": "websocket.receive", "text": text}
    assert not assembler.in_message


@given(st.lists(st.binary(max_size=50), min_size=1, max_size=10))
def test_assembler_binary_fragments(pieces: list[bytes]) -> None:
    """Binary fragments are concatenated, empty ones included."""
    assembler = MessageAssembler()
    result = None
    for i, piece in enumerate(pieces):
        opcode = BINARY if i == 0 else CONT
        result = assembler.feed(Frame(opcode, piece, fin=i == len(pieces) - 1))
    assert result == {"type": "websocket.receive", "bytes": b"".join(pieces)}


# --- the connection on a fake transport ------------------------------------------------------
def client_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    return Frame(opcode, payload, fin).serialize(mask=True)


async def open_connection(app: Any, **settings: Any) -> tuple[Any, FakeTransport, ServerState]:
    state = ServerState(Config(**settings), app)
    transport = FakeTransport()
    websocket.upgrade(state, transport, http_scope(), b"")  # type: ignore[arg-type]
    for _ in range(5):
        await asyncio.sleep(0)
    return transport.protocol, transport, state


def test_inbox_bounded_by_max_queue() -> None:
    """With the app not receiving, reading pauses at --ws-max-queue and resumes as it drains."""
    gate = asyncio.Event()
    got: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await gate.wait()
        while (message := await receive())["type"] != "websocket.disconnect":
            got.append(message)

    async def scenario() -> None:
        conn, transport, _ = await open_connection(app, ws_max_queue=4, ws_ping_interval=0)
        for i in range(3):
            conn.data_received(client_frame(TEXT, b"m%d" % i))
        assert transport.reading
        conn.data_received(client_frame(TEXT, b"m3"))
        assert not transport.reading and len(conn.inbox) == 4
        gate.set()
        for _ in range(5):
            await asyncio.sleep(0)
        assert transport.reading
        assert [m["text"] for m in got] == ["m0", "m1", "m2", "m3"]

    asyncio.run(scenario())


def test_send_blocks_while_paused_and_fails_when_lost() -> None:
    """send() waits while writing is paused and raises ClientDisconnected once the peer is gone."""
    gate = asyncio.Event()
    outcome: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await gate.wait()
        outcome.append("sending")
        try:
            await send({"type": "websocket.send", "text": "queued"})
            outcome.append("sent")
        except OSError as exc:
            outcome.append(type(exc).__name__)

    async def scenario() -> None:
        conn, transport, state = await open_connection(app, ws_ping_interval=0)
        conn.pause_writing()
        written = len(transport.written)
        gate.set()
        for _ in range(5):
            await asyncio.sleep(0)
        assert outcome == ["sending"]
        assert len(transport.written) == written
        assert not transport.reading  # pongs cannot pile up while the peer does not read
        conn.connection_lost(None)
        await asyncio.wait_for(asyncio.gather(*state.tasks), 1)
        assert outcome == ["sending", "ClientDisconnected"]
        assert conn not in state.connections

    asyncio.run(scenario())


def test_resume_writing_releases_send() -> None:
    """A send waiting on a paused transport goes out once writing resumes."""
    sent = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "bytes": b"late"})
        sent.set()
        await receive()

    async def scenario() -> None:
        state = ServerState(Config(ws_ping_interval=0), app)
        transport = FakeTransport()
        websocket.upgrade(state, transport, http_scope(), b"")  # type: ignore[arg-type]
        conn = transport.protocol
        conn.pause_writing()
        for _ in range(5):
            await asyncio.sleep(0)
        assert not sent.is_set()
        conn.resume_writing()
        await asyncio.wait_for(sent.wait(), 1)
        assert transport.written.endswith(b"\x82\x04late")
        conn.connection_lost(None)

    asyncio.run(scenario())


def test_shutdown_before_accept_answers_503() -> None:
    """A WebSocket still in its handshake at the drain deadline gets 503, and the app a
    disconnect."""
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        seen.append(await receive())

    async def scenario() -> None:
        conn, transport, _ = await open_connection(app)
        conn.shutdown_now(ShutdownReason.RESTART)
        for _ in range(3):
            await asyncio.sleep(0)
        assert transport.written.startswith(b"HTTP/1.1 503 ")
        assert transport.closed
        assert seen and seen[0]["type"] == "websocket.disconnect"

    asyncio.run(scenario())


def test_invalid_phase_transition_raises() -> None:
    """Moving a closed connection back to open is refused with a named error."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()

    async def scenario() -> None:
        conn, _, _ = await open_connection(app)
        conn.connection_lost(None)
        with pytest.raises(websocket.InvalidTransition):
            conn._move(websocket.Phase.OPEN)

    asyncio.run(scenario())


def test_close_handshake_times_out() -> None:
    """A peer that never answers our close frame is dropped after the close timeout."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})
        await receive()

    async def scenario(monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(websocket, "CLOSE_TIMEOUT", 0.01)
        conn, transport, state = await open_connection(app, ws_ping_interval=0)
        await asyncio.wait_for(asyncio.gather(*state.tasks), 2)
        assert transport.closed
        assert conn.phase is websocket.Phase.CLOSED

    with pytest.MonkeyPatch.context() as mp:
        asyncio.run(scenario(mp))


# --- keepalive on a fake clock ---------------------------------------------------------------
class FakeTimers:
    """Just enough of a loop for Keepalive: call_later recorded, fired by hand."""

    def __init__(self) -> None:
        self.pending: list[tuple[float, Any, bool]] = []

    def call_later(self, delay: float, callback: Any) -> Any:
        entry = [delay, callback, False]

        class Handle:
            def cancel(self) -> None:
                entry[2] = True

        self.pending.append(entry)  # type: ignore[arg-type]
        return Handle()

    def fire(self) -> float:
        """Run the earliest live timer; return its delay."""
        live = [e for e in self.pending if not e[2]]
        entry = min(live, key=lambda e: e[0])
        self.pending.remove(entry)
        entry[1]()
        return float(entry[0])

    def live(self) -> int:
        return sum(1 for e in self.pending if not e[2])


def make_keepalive(interval: float, timeout: float) -> tuple[Any, FakeTimers, list[Any]]:
    from corral.worker.websocket.keepalive import Keepalive

    timers, log = FakeTimers(), []
    keepalive = Keepalive(
        timers,  # type: ignore[arg-type]
        interval,
        timeout,
        lambda payload: log.append(("ping", payload)),
        lambda: log.append(("timeout", None)),
    )
    return keepalive, timers, log


def test_keepalive_pong_schedules_next_ping() -> None:
    """A matching pong cancels the timeout and the next ping follows one interval later."""
    keepalive, timers, log = make_keepalive(20, 5)
    keepalive.start()
    assert timers.fire() == 20 and log[-1][0] == "ping"
    keepalive.pong(log[-1][1])
    assert timers.live() == 1
    assert timers.fire() == 20 and log[-1][0] == "ping"
    assert ("timeout", None) not in log


def test_keepalive_stale_pong_does_not_count() -> None:
    """A pong to an older ping leaves the current one outstanding, so the timeout fires."""
    keepalive, timers, log = make_keepalive(20, 5)
    keepalive.start()
    timers.fire()
    keepalive.pong(b"\x00\x00\x00\x00")
    assert timers.fire() == 5
    assert log[-1] == ("timeout", None)


def test_keepalive_disabled_and_no_timeout() -> None:
    """Interval 0 schedules nothing; timeout 0 pings every interval without waiting."""
    keepalive, timers, _ = make_keepalive(0, 5)
    keepalive.start()
    assert timers.live() == 0 and not keepalive.active
    keepalive, timers, log = make_keepalive(20, 0)
    keepalive.start()
    timers.fire()
    timers.fire()
    assert [kind for kind, _ in log] == ["ping", "ping"]
