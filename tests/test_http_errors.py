"""App failures at every stage, unsafe response headers, length mismatches, and limits."""

from __future__ import annotations

import httpx
import pytest

from tests import apps
from tests.apps import Gate
from tests.conftest import RawClient, get, wait_for


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        ("before-start", "Exception in ASGI application"),
        ("no-response", "ASGI callable returned without starting response."),
        ("start-only", "ASGI callable returned without completing response."),
        # The head waits for the first body message, so a failure right after the start
        # message still gets a clean 500.
        ("after-start", "Exception in ASGI application"),
    ],
)
def test_failure_before_response_gives_500(http_server, caplog, stage, message):
    """An app failing before its response went out gets a 500 and one logged error."""
    server = http_server(apps.failing(stage))
    with RawClient(server.port) as raw:
        raw.send(get())
        response = raw.read_response()
        assert response.status == 500
        raw.send(get())  # the connection is still good for the next request
        assert raw.read_response().status == 500
    assert any(message in r.getMessage() for r in caplog.records if r.name == "corral.error")


@pytest.mark.parametrize("stage", ["body-before-start", "double-start"])
def test_message_out_of_order_closes(http_server, caplog, stage):
    """Messages out of order raise a clear error in the app; the connection closes."""
    server = http_server(apps.failing(stage))
    with RawClient(server.port) as raw:
        raw.send(get() + get())
        response = raw.read_response()
        assert response.status == 500
        assert response.header("connection") == "close"
        assert raw.read_to_eof() == b""
    errors = [r for r in caplog.records if r.name == "corral.error" and r.exc_info]
    assert "Expected ASGI message" in str(errors[0].exc_info[1])


@pytest.mark.parametrize("stage", ["mid-body", "unfinished"])
def test_failure_after_response_started_closes(http_server, stage):
    """An app failing after its response started gets the connection closed mid-response."""
    server = http_server(apps.failing(stage))
    with RawClient(server.port) as raw:
        raw.send(get())
        head = raw.read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
        rest = raw.read_to_eof()
        assert not rest.endswith(b"0\r\n\r\n")  # the chunked body never looks complete


@pytest.mark.parametrize("stage", ["after-complete", "send-after-complete"])
def test_failure_after_response_complete_is_logged_only(http_server, caplog, stage):
    """An exception after a complete response is logged; the client already has its answer."""
    server = http_server(apps.failing(stage))
    with RawClient(server.port) as raw:
        raw.send(get())
        assert raw.read_response().body == b"partial"
    wait_for(
        lambda: any(r.exc_info for r in caplog.records if r.name == "corral.error"),
        message="the error to be logged",
    )


@pytest.mark.parametrize(
    "headers",
    [
        [(b"x-evil", b"a\r\nset-cookie: injected=1")],
        [(b"x-evil\r\nset-cookie", b"injected=1")],
        [(b"x-evil", b"a\nset-cookie: injected=1")],
        [(b"x-nul", b"a\x00b")],
        [(b"content-length", b"12, 12")],
        [("x-str", "not bytes")],
    ],
)
def test_unsafe_response_headers_refused(http_server, caplog, headers):
    """Header names or values with CR, LF or NUL get a 500; nothing reaches the wire."""
    server = http_server(apps.headers_app(headers))
    with RawClient(server.port) as raw:
        raw.send(get())
        response = raw.read_response()
        assert response.status == 500
        assert b"injected" not in response.body
        assert all("injected" not in value for _, value in response.headers)
        assert all(name != "set-cookie" for name, _ in response.headers)
        raw.send(get())
        assert raw.read_response().status == 500
    assert any("Refused the app's response" in r.getMessage() for r in caplog.records)


def test_str_response_header_is_named_in_the_500_log(http_server, caplog):
    """A str header gets a 500 and one log line that says why and names the header."""
    server = http_server(apps.headers_app([(b"content-type", b"text/plain"), ("x-str", "v")]))
    with RawClient(server.port) as raw:
        raw.send(get())
        assert raw.read_response().status == 500
    lines = [
        r.getMessage() for r in caplog.records if "Refused the app's response" in r.getMessage()
    ]
    assert len(lines) == 1
    assert "header names and values must be bytes" in lines[0] and "'x-str'" in lines[0]
    assert not any(r.exc_info for r in caplog.records)


def test_body_longer_than_content_length_is_cut(http_server, caplog):
    """Bytes beyond Content-Length are cut, the connection closes, and it is logged."""
    server = http_server(apps.headers_app([(b"content-length", b"3")], body=b"abcdef"))
    with RawClient(server.port) as raw:
        raw.send(get() + get())
        response = raw.read_response()
        assert response.body == b"abc"
        assert response.header("connection") == "close"
        assert raw.read_to_eof() == b""
    assert any("longer than its Content-Length" in r.getMessage() for r in caplog.records)


def test_body_shorter_than_content_length_closes(http_server, caplog):
    """A body shorter than its Content-Length closes the connection and is logged."""
    server = http_server(apps.headers_app([(b"content-length", b"10")], body=b"abc"))
    with RawClient(server.port) as raw:
        raw.send(get())
        raw.read_until(b"\r\n\r\n")
        assert raw.read_to_eof() == b"abc"
    assert any("shorter than its Content-Length" in r.getMessage() for r in caplog.records)


def test_limit_concurrency_503(http_server):
    """Past --limit-concurrency, new requests get 503 with Connection: close."""
    gate = Gate()
    server = http_server(apps.gated(gate), limit_concurrency=1)
    with RawClient(server.port) as first:
        first.send(get("/held"))
        wait_for(gate.entered.is_set, message="the first request to reach the app")
        with RawClient(server.port) as second:
            second.send(get("/extra"))
            response = second.read_response()
            assert response.status == 503
            assert response.header("connection") == "close"
            assert second.is_closed()
        gate.open()
        assert first.read_response().body == b"done/held"
    assert httpx.get(server.url("/fast")).status_code == 200


def test_health_path(http_server):
    """The health path answers 200 without calling the app."""
    server = http_server(apps.failing("before-start"), health_path="/healthz")
    response = httpx.get(server.url("/healthz"))
    assert response.status_code == 200
    assert response.text == "OK"
    assert server.server.state.total_requests == 0  # probes don't count toward recycling
    assert httpx.get(server.url("/other")).status_code == 500
    assert server.server.state.total_requests == 1


def test_error_answer_survives_client_still_sending(http_server):
    """After a 400 the server half-closes and drains input, so the answer isn't reset away."""
    server = http_server(apps.hello)
    with RawClient(server.port) as raw:
        raw.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n")
        raw.send(b"y" * (4 * 1024 * 1024))  # would fail with a reset if nobody read it
        response = raw.read_response()
        assert response.status == 400
        assert response.header("connection") == "close"
        assert raw.is_closed()
