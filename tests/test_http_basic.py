"""HTTP/1.1 basics over real sockets: keep-alive, pipelining, chunked bodies, 100-continue,
bodiless responses, HTTP/1.0, and the scope an app receives."""

from __future__ import annotations

import logging

import httpx
import pytest
from corral.worker.asgi import cycle_log

from tests import apps
from tests.apps import Gate, Recorder
from tests.conftest import RawClient, get, wait_for


def test_keep_alive_reuses_one_connection(http_server):
    """Several requests on one keep-alive connection all get answers."""
    server = http_server(apps.hello)
    with httpx.Client() as client:
        for _ in range(3):
            response = client.get(server.url())
            assert response.status_code == 200
            assert response.text == "Hello, world!"
    assert server.server.state.total_requests == 3
    with RawClient(server.port) as raw:
        for _ in range(3):
            raw.send(get())
            assert raw.read_response().body == b"Hello, world!"


def test_default_headers(http_server):
    """Server and Date are sent, --header values added, and the app can override them."""
    server = http_server(apps.headers_app([(b"server", b"mine")]), headers=(("X-Team", "corral"),))
    response = httpx.get(server.url())
    assert response.headers["server"] == "mine"
    assert response.headers.get_list("server") == ["mine"]
    assert response.headers["x-team"] == "corral"
    assert response.headers["date"].endswith(" GMT")


def test_server_and_date_headers_can_be_disabled(http_server):
    """--no-server-header and --no-date-header leave them out."""
    server = http_server(apps.hello, server_header=False, date_header=False)
    response = httpx.get(server.url())
    assert "server" not in response.headers
    assert "date" not in response.headers


def test_pipelined_requests_answered_in_order(http_server):
    """Three pipelined requests in one write get three responses in request order."""
    server = http_server(apps.echo)
    with RawClient(server.port) as raw:
        raw.send(get("/one") + get("/two?x=1") + get("/three"))
        paths = [raw.read_response().header("x-path") for _ in range(3)]
    assert paths == ["/one", "/two", "/three"]


def test_pipelined_request_waits_for_previous_response(http_server):
    """A pipelined request's app does not start until the previous response is complete."""
    gate, seen = Gate(), Recorder()
    server = http_server(apps.gated(gate, recorder=seen))
    with RawClient(server.port) as raw:
        raw.send(get("/slow") + get("/fast"))
        wait_for(lambda: ("start", "/slow") in seen)
        conn = wait_for(lambda: server.connections and server.connections[0])
        wait_for(lambda: len(conn._queue) == 1, message="the second request to be queued")
        assert ("start", "/fast") not in seen
        gate.open()
        assert raw.read_response().body == b"done/slow"
        assert raw.read_response().body == b"done/fast"
    assert seen.snapshot().index(("end", "/slow")) < seen.snapshot().index(("start", "/fast"))


def test_connection_close_from_client(http_server):
    """Connection: close is answered with Connection: close, then the server closes."""
    server = http_server(apps.hello)
    with RawClient(server.port) as raw:
        raw.send(get(extra=b"Connection: close\r\n") + get("/ignored"))
        response = raw.read_response()
        assert response.header("connection") == "close"
        assert raw.read_to_eof() == b""  # the pipelined request after it is not answered


def test_connection_close_from_app(http_server):
    """An app's Connection: close header ends the connection after the response."""
    server = http_server(apps.headers_app([(b"connection", b"close")]))
    with RawClient(server.port) as raw:
        raw.send(get())
        assert raw.read_response().header("connection") == "close"
        assert raw.is_closed()


def test_chunked_request_body(http_server):
    """A chunked request body reaches the app reassembled."""
    server = http_server(apps.echo)
    with RawClient(server.port) as raw:
        raw.send(
            b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: 1\r\n\r\n"
        )
        assert raw.read_response().body == b"hello world"
        raw.send(get("/after"))  # the trailer was consumed: the next request parses
        assert raw.read_response().header("x-path") == "/after"


def test_chunked_response_body(http_server):
    """A response without Content-Length streamed in pieces is sent chunked."""
    server = http_server(apps.chunks)
    with RawClient(server.port) as raw:
        raw.send(get())
        response = raw.read_response()
    assert response.header("transfer-encoding") == "chunked"
    assert response.body == b"one,two,three"


def test_single_body_message_gets_content_length(http_server):
    """A response sent in one body message gets a Content-Length instead of chunking."""
    server = http_server(apps.echo)
    response = httpx.post(server.url(), content=b"abc")
    assert response.headers["content-length"] == "3"
    assert "transfer-encoding" not in response.headers


def test_streaming_echo(http_server):
    """Body pieces stream through receive() and send() both ways."""
    server = http_server(apps.echo_streaming)
    payload = b"0123456789" * 50_000
    response = httpx.post(server.url(), content=iter([payload[:200_000], payload[200_000:]]))
    assert response.content == payload


def test_expect_continue_sent_when_app_reads(http_server):
    """100 Continue goes out once the app awaits the body, then the final response."""
    server = http_server(apps.echo)
    with RawClient(server.port) as raw:
        raw.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert raw.read_until(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        raw.send(b"hello")
        assert raw.read_response().body == b"hello"


def test_expect_continue_not_sent_when_app_ignores_body(http_server):
    """An app that answers without reading gets no 100; the connection then closes."""
    server = http_server(apps.hello)
    with RawClient(server.port) as raw:
        raw.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        response = raw.read_response()
        assert response.status == 200
        assert response.header("connection") == "close"
        assert raw.read_to_eof() == b""


def test_expect_continue_never_for_http10(http_server):
    """HTTP/1.0 requests never get 100 Continue."""
    server = http_server(apps.echo)
    with RawClient(server.port) as raw:
        raw.send(b"POST / HTTP/1.0\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nhi")
        response = raw.read_response()
    assert response.status == 200
    assert response.body == b"hi"


def test_head_response_has_no_body(http_server, caplog, monkeypatch):
    """HEAD gets the headers (Content-Length kept) and no body; the connection stays usable.

    The app answered HEAD as GET, body included, which is normal: no warning for that.
    """
    monkeypatch.setattr(cycle_log, "_warned", set())
    server = http_server(apps.hello)
    with RawClient(server.port) as raw:
        raw.send(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n")
        response = raw.read_response(head_request=True)
        assert response.header("content-length") == "13"
        raw.send(get())
        assert raw.read_response().body == b"Hello, world!"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("status", [204, 304])
def test_bodiless_status_drops_body(http_server, status, caplog, monkeypatch):
    """204 and 304 never carry a body even when the app sends one; it is logged, once."""
    monkeypatch.setattr(cycle_log, "_warned", set())
    server = http_server(apps.with_status(status))
    with RawClient(server.port) as raw:
        raw.send(get())
        response = raw.read_response()
        assert response.status == status
        assert response.header("transfer-encoding") is None
        raw.send(get())
        assert raw.read_response().status == status  # no stray body bytes in between
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and f"can't have one (GET {status})" in warnings[0]


def test_http10_response_close_delimited(http_server):
    """HTTP/1.0 never gets chunked: a streamed response is close-delimited."""
    server = http_server(apps.chunks)
    with RawClient(server.port) as raw:
        raw.send(b"GET / HTTP/1.0\r\n\r\n")
        head = raw.read_until(b"\r\n\r\n").lower()
        assert b"transfer-encoding" not in head
        assert b"connection: close" in head
        assert raw.read_to_eof() == b"one,two,three"


def test_http10_keep_alive_only_when_asked(http_server):
    """HTTP/1.0 closes by default and keeps the connection when asked with keep-alive."""
    server = http_server(apps.hello)
    with RawClient(server.port) as raw:
        raw.send(b"GET / HTTP/1.0\r\n\r\n")
        assert raw.read_response().body == b"Hello, world!"
        assert raw.is_closed()
    with RawClient(server.port) as raw:
        for _ in range(2):
            raw.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            response = raw.read_response()
            assert response.header("connection") == "keep-alive"
            assert response.body == b"Hello, world!"


def test_scope_contents(http_server):
    """The scope follows the ASGI HTTP spec: path decoded, raw bytes kept, addresses set."""
    seen = Recorder()
    server = http_server(apps.scope_recorder(seen), root_path="/api")
    with RawClient(server.port) as raw:
        raw.send(b"GET /caf%C3%A9/x?a=1&b=%20 HTTP/1.1\r\nHost: t\r\nX-Thing:  v \r\n\r\n")
        assert raw.read_response().status == 200
        client_port = raw.sock.getsockname()[1]
    scope = seen.snapshot()[0]
    assert scope["type"] == "http"
    assert scope["asgi"]["version"] == "3.0"
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["root_path"] == "/api"
    assert scope["path"] == "/api/café/x"
    assert scope["raw_path"] == b"/api/caf%C3%A9/x"
    assert scope["query_string"] == b"a=1&b=%20"
    assert (b"x-thing", b"v") in scope["headers"]
    assert scope["client"] == ("127.0.0.1", client_port)
    assert scope["server"] == ("127.0.0.1", server.port)
    assert scope["state"] == {}
    assert isinstance(scope["extensions"], dict)


def test_access_log_line(http_server, caplog):
    """Each response logs one access line in uvicorn's format."""
    caplog.set_level("INFO", logger="corral.access")
    server = http_server(apps.hello)
    httpx.get(server.url("/p?q=1"))
    lines = [r.getMessage() for r in caplog.records if r.name == "corral.access"]
    assert len(lines) == 1
    assert lines[0].endswith(' - "GET /p?q=1 HTTP/1.1" 200 OK')
    assert lines[0].startswith("127.0.0.1:")
