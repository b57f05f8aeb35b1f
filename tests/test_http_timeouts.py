"""Connection timers: keep-alive idle, request head (408), request body stall, trickling."""

from __future__ import annotations

import time

from tests import apps
from tests.conftest import RawClient, get


def test_keep_alive_timeout_closes_idle_connection(http_server):
    """An idle keep-alive connection is closed after --timeout-keep-alive."""
    server = http_server(apps.hello, timeout_keep_alive=0.2)
    with RawClient(server.port) as raw:
        raw.send(get())
        assert raw.read_response().status == 200
        assert raw.is_closed()  # blocks until the server closes (socket timeout is 10 s)


def test_silent_connection_closed_by_head_timeout(http_server):
    """A connection that never sends a byte is closed (silently) by the head timeout."""
    server = http_server(apps.hello, timeout_request_header=0.2)
    with RawClient(server.port) as raw:
        assert raw.read_to_eof() == b""


def test_incomplete_head_gets_408(http_server):
    """A request head not complete within --timeout-request-header gets 408 and a close."""
    server = http_server(apps.hello, timeout_request_header=0.2)
    with RawClient(server.port) as raw:
        raw.send(b"GET / HTTP/1.1\r\nHost: t\r\n")
        response = raw.read_response()
        assert response.status == 408
        assert response.header("connection") == "close"
        assert raw.is_closed()


def test_stalled_body_gets_408_before_response(http_server):
    """A body stalling past --timeout-request-body gets 408 when no response started."""
    server = http_server(apps.echo, timeout_request_body=0.2)
    with RawClient(server.port) as raw:
        raw.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nab")
        response = raw.read_response()
        assert response.status == 408
        assert raw.is_closed()


def test_stalled_body_closes_after_response_started(http_server):
    """A body stalling after the response started just closes the connection."""
    server = http_server(apps.echo_streaming, timeout_request_body=0.2)
    with RawClient(server.port) as raw:
        raw.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nab")
        head = raw.read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
        rest = raw.read_to_eof()
        assert rest == b"2\r\nab\r\n"  # the echoed piece, then the close; no 408


def test_trickled_head_does_not_extend_the_connection(http_server):
    """Trickling header bytes never resets the timers: the connection ends with a 408."""
    server = http_server(apps.hello, timeout_keep_alive=0.2, timeout_request_header=0.4)
    with RawClient(server.port, timeout=5) as raw:
        raw.send(get())
        assert raw.read_response().status == 200
        raw.send(b"GET / HTTP/1.1\r\n")
        started = time.monotonic()
        closed = False
        for index in range(60):  # would take 3 s if every byte extended the deadline
            try:
                raw.send(b"X-%d: 1\r\n" % index)
            except (BrokenPipeError, ConnectionResetError):
                closed = True  # the server closed after its 408
                break
            raw.sock.settimeout(0.05)
            try:
                raw._fill()  # the 408 or EOF: either way the server ended the connection
            except TimeoutError:
                continue
            except ConnectionResetError:  # our last bytes crossed the server's close
                pass
            finally:
                raw.sock.settimeout(5)
            closed = True
            break
        assert closed
        assert time.monotonic() - started < 3
        assert not raw.buf or bytes(raw.buf).startswith(b"HTTP/1.1 408 ")
