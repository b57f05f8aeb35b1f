"""The wire corpus (tests/wire_corpus.py) over real sockets, on both parsers and both loops,
plus the response-side rules and timers of issue 3.

For every case the raw request is sent with a pipelined follow-up behind it. A refused
request must get its status with ``Connection: close``, then EOF: the follow-up is never
answered. A served request must reach the app exactly as the case says, and its follow-up
is answered exactly when the connection stays open.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from tests.apps import respond
from tests.conftest import STACKS, RawClient, Running, start_server
from tests.wire_corpus import CASES, FOLLOW_UP, WireCase


async def reporting_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with JSON describing the request as the app saw it."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return  # the request was refused mid-body: nothing to answer
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    seen = {
        "method": scope["method"],
        "path": scope["path"],
        "raw_path": scope["raw_path"].decode("latin-1"),
        "query": scope["query_string"].decode("latin-1"),
        "http_version": scope["http_version"],
        "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]],
        "body": body.decode("latin-1"),
    }
    await respond(send, json.dumps(seen).encode(), headers=[(b"content-type", b"application/json")])


def _config_key(case: WireCase) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(case.config.items()))


@pytest.fixture(scope="module", params=STACKS, ids=["-".join(s) for s in STACKS])
def servers(request: pytest.FixtureRequest) -> Iterator[dict[Any, Running]]:
    """One server per distinct config in the corpus, for one (loop, parser) stack."""
    loop_kind, http_kind = request.param
    running: dict[Any, Running] = {}
    try:
        for case in CASES:
            key = _config_key(case)
            if key not in running:
                running[key] = start_server(
                    reporting_app, loop_kind, http_kind, log_level="warning", **case.config
                )
        yield running
    finally:
        for server in running.values():
            server.stop()


def _check_seen(case: WireCase, seen: dict[str, Any]) -> None:
    expected = case.seen
    for key in ("method", "path"):
        if key in expected:
            assert seen[key] == expected[key], case.id
    if "raw_path" in expected:
        assert seen["raw_path"].encode("latin-1") == expected["raw_path"], case.id
    if "query" in expected:
        assert seen["query"].encode("latin-1") == expected["query"], case.id
    assert seen["body"].encode("latin-1") == expected.get("body", b""), case.id
    headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in seen["headers"]]
    for name, value in expected.get("headers", {}).items():
        assert [v for n, v in headers if n == name] == [value], case.id


@pytest.mark.smoke
@pytest.mark.parametrize("case", CASES, ids=[f"{c.id}" for c in CASES])
def test_wire_case(
    case: WireCase, servers: dict[Any, Running], caplog: pytest.LogCaptureFixture
) -> None:
    """A corpus request gets its RFC-correct answer; a smuggled follow-up never does."""
    server = servers[_config_key(case)]
    status = case.status
    with caplog.at_level(logging.WARNING), RawClient(server.port) as client:
        client.send(case.raw + FOLLOW_UP)
        response = client.read_response()
        assert response.status == status, f"{case.id} ({case.rfc}): {response.body[:200]!r}"
        if status < 400:
            _check_seen(case, json.loads(response.body))
        if case.closes_for():
            if status >= 400:
                assert response.header("connection") == "close", case.id
            assert client.is_closed(), f"{case.id}: the follow-up was answered"
        else:
            follow_up = client.read_response()
            assert follow_up.status == 200
            assert json.loads(follow_up.body)["path"] == "/smuggled"
    assert not any(r.exc_info for r in caplog.records), "a traceback was logged"


# --- the response side and the timers (issue 3: "Responses", "Slow clients") ---------------
def app_sending(
    status: int = 200,
    headers: list[tuple[bytes, bytes]] | None = None,
    bodies: tuple[bytes, ...] = (b"hello",),
    read_request: bool = True,
) -> Any:
    """An app answering with ``status``, ``headers`` and the body pieces given."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if read_request:
            while (await receive()).get("more_body", False):
                pass
        await send({"type": "http.response.start", "status": status, "headers": headers or []})
        for i, body in enumerate(bodies):
            more = i < len(bodies) - 1
            await send({"type": "http.response.body", "body": body, "more_body": more})

    return app


def test_http10_streamed_response_is_close_delimited(http_server: Any) -> None:
    """A streamed response to HTTP/1.0 is never chunked: it ends with the connection."""
    server = http_server(app_sending(bodies=(b"one ", b"two")))
    with RawClient(server.port) as client:
        client.send(b"GET / HTTP/1.0\r\n\r\n")
        raw = client.read_to_eof()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding" not in head.lower()
    assert body == b"one two"


def test_no_100_continue_for_http10(http_server: Any) -> None:
    """HTTP/1.0 never gets 100 Continue, even with Expect: 100-continue."""
    server = http_server(app_sending())
    with RawClient(server.port) as client:
        client.send(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc")
        raw = client.read_to_eof()
    assert raw.startswith(b"HTTP/1.1 200")
    assert b"100 Continue" not in raw


def test_100_continue_for_http11(http_server: Any) -> None:
    """HTTP/1.1 with Expect: 100-continue gets 100 Continue once the app reads the body."""
    server = http_server(app_sending())
    with RawClient(server.port) as client:
        client.send(
            b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"
        )
        assert client.read_response().status == 100
        client.send(b"abc")
        assert client.read_response().status == 200


@pytest.mark.parametrize(("method", "status"), [("HEAD", 200), ("GET", 204), ("GET", 304)])
def test_bodiless_responses_drop_the_body(http_server: Any, method: str, status: int) -> None:
    """HEAD, 204 and 304 carry no body on the wire even when the app sends one."""
    server = http_server(app_sending(status, bodies=(b"should not be sent",)))
    with RawClient(server.port) as client:
        client.send(f"{method} / HTTP/1.1\r\nHost: x\r\n\r\n".encode() + FOLLOW_UP)
        first = client.read_response(head_request=True)
        assert first.status == status
        # The next response starts right after the head: nothing of the body leaked.
        second = client.read_response(head_request=method == "HEAD")
        assert second.status == status
    assert b"should not" not in first.body + second.body


@pytest.mark.parametrize(
    "header",
    [
        (b"x-ok", b"a\r\nInjected: 1"),
        (b"x-ok", b"a\nInjected: 1"),
        (b"x-ok", b"a\x00b"),
        (b"x-bad\r\ninjected", b"1"),
    ],
)
def test_app_header_injection_refused(
    http_server: Any, header: tuple[bytes, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    """An app header with CR, LF or NUL gets a 500 and nothing reaches the wire."""
    server = http_server(app_sending(headers=[header]))
    with caplog.at_level(logging.ERROR), RawClient(server.port) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        response = client.read_response()
        rest = client.read_to_eof() if response.header("connection") == "close" else b""
    assert response.status == 500
    assert all(name != "injected" for name, _ in response.headers)
    assert b"Injected" not in response.body + rest
    assert any("Refused" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("bodies", [(b"0123456789",), (b"01234", b"56789")])
def test_app_body_longer_than_content_length(
    http_server: Any, bodies: tuple[bytes, ...], caplog: pytest.LogCaptureFixture
) -> None:
    """A body longer than the declared Content-Length is cut and the connection closed."""
    server = http_server(app_sending(headers=[(b"content-length", b"7")], bodies=bodies))
    with caplog.at_level(logging.WARNING), RawClient(server.port) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + FOLLOW_UP)
        response = client.read_response()
        assert response.body == b"0123456"
        assert client.is_closed()


def test_app_body_shorter_than_content_length(http_server: Any) -> None:
    """A body shorter than the declared Content-Length closes the connection."""
    server = http_server(app_sending(headers=[(b"content-length", b"10")], bodies=(b"short",)))
    with RawClient(server.port) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + FOLLOW_UP)
        raw = client.read_to_eof()
    assert raw.startswith(b"HTTP/1.1 200")
    assert raw.endswith(b"short")  # then EOF: the follow-up is never answered


def test_header_timeout_gives_408(http_server: Any) -> None:
    """A head not complete within --timeout-request-header gets 408 and a close."""
    server = http_server(app_sending(), timeout_request_header=0.3)
    with RawClient(server.port) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        raw = client.read_to_eof()
    assert raw.startswith(b"HTTP/1.1 408")


#: The start of a TLS 1.2/1.3 ClientHello: no line break, so it never completes a head.
CLIENT_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32))


@pytest.mark.parametrize(
    "junk",
    [CLIENT_HELLO, CLIENT_HELLO + b"\r\n\r\n", b"\x00\x01binary", b"GET\x7f"],
    ids=["tls", "tls-with-crlf", "binary", "del"],
)
def test_junk_head_is_refused_at_once(
    http_server: Any, caplog: pytest.LogCaptureFixture, junk: bytes
) -> None:
    """Bytes that can never start a request get 400 and a close at once, not a 408 after
    --timeout-request-header (set here far beyond the client's deadline), and one line."""
    server = http_server(app_sending(), timeout_request_header=600)
    with RawClient(server.port) as client:
        client.send(junk)
        raw = client.read_to_eof()
    assert raw.startswith(b"HTTP/1.1 400")
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "Invalid HTTP request received (400" in lines[0]
    if junk.startswith(CLIENT_HELLO):
        assert "TLS handshake on a plain-HTTP port" in lines[0]


def test_body_timeout_gives_408(http_server: Any) -> None:
    """A body stalled past --timeout-request-body gets 408 when no response has started."""
    server = http_server(app_sending(), timeout_request_body=0.3)
    with RawClient(server.port) as client:
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        raw = client.read_to_eof()
    assert raw.startswith(b"HTTP/1.1 408")


def test_body_timeout_after_response_started_closes(http_server: Any) -> None:
    """A body stalled after the response started just closes the connection."""

    async def early_answer(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"early", "more_body": True})
        while (await receive()).get("more_body", False):
            pass  # the rest of the body never comes

    server = http_server(early_answer, timeout_request_body=0.3)
    with RawClient(server.port) as client:
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        raw = client.read_to_eof()
    assert raw.startswith(b"HTTP/1.1 200")
    assert b"early" in raw
    assert b"408" not in raw


@pytest.mark.parametrize(
    "rest",
    [
        b"",  # the body stalls
        b"zz\r\n",  # the body turns malformed
    ],
    ids=["stalled", "malformed"],
)
def test_unread_body_after_complete_response_closes(http_server: Any, rest: bytes) -> None:
    """After a response sent before the body arrived, a stalled or bad body closes the
    connection (no 408 after the 200), instead of holding it open forever."""
    server = http_server(app_sending(read_request=False), timeout_request_body=0.3)
    with RawClient(server.port) as client:
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        response = client.read_response()
        assert response.status == 200
        client.send(rest)
        assert client.read_to_eof() == b""
