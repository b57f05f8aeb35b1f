"""Response framing without sockets: heads, header refusal, body modes, the Date clock."""

from __future__ import annotations

import asyncio
import time

import pytest
from corral.config import Config
from corral.worker.dates import DateClock, format_http_date
from corral.worker.http1.writer import (
    BodyMode,
    HeadFraming,
    InvalidResponseHeader,
    ResponseFramer,
    simple_response,
    status_line,
    status_text,
)
from corral.worker.state import ServerState

DEFAULTS = ServerState(Config(app=None, date_header=False))


def head(
    headers: list[tuple[bytes, bytes]],
    *,
    status: int = 200,
    no_body: bool = False,
    http10: bool = False,
    keep_alive: bool = True,
    body_len: int | None = None,
) -> tuple[bytes, ResponseFramer]:
    framer = ResponseFramer()
    data = framer.head(
        status,
        headers,
        DEFAULTS,
        HeadFraming(no_body=no_body, http10=http10, keep_alive=keep_alive),
        body_len=body_len,
    )
    return data, framer


def test_status_lines_and_text():
    """Status lines carry the reason phrase; unknown codes get none."""
    assert status_line(200) == b"HTTP/1.1 200 OK\r\n"
    assert status_line(599) == b"HTTP/1.1 599\r\n"
    assert status_text(404) == "404 Not Found"


def test_known_body_gets_content_length():
    """A whole body known up front is sent with Content-Length."""
    data, framer = head([(b"content-type", b"text/plain")], body_len=5)
    assert data == (
        b"HTTP/1.1 200 OK\r\nserver: corral\r\ncontent-type: text/plain\r\n"
        b"content-length: 5\r\n\r\n"
    )
    assert framer.mode is BodyMode.LENGTH
    assert framer.frame(b"hello", False) == b"hello"
    assert not framer.short and not framer.overflow


def test_streamed_body_is_chunked():
    """Without a length, HTTP/1.1 bodies are chunked and terminated."""
    data, framer = head([])
    assert b"transfer-encoding: chunked\r\n" in data
    assert framer.frame(b"abc", True) == b"3\r\nabc\r\n"
    assert framer.frame(b"", True) == b""
    assert framer.frame(b"de", False) == b"2\r\nde\r\n0\r\n\r\n"


def test_http10_is_close_delimited():
    """HTTP/1.0 never gets chunked: no length means close-delimited."""
    data, framer = head([(b"transfer-encoding", b"chunked")], http10=True)
    assert b"transfer-encoding" not in data
    assert b"connection: close\r\n" in data
    assert framer.mode is BodyMode.CLOSE
    assert not framer.keep_alive
    assert framer.frame(b"raw", False) == b"raw"


def test_http10_keep_alive_is_announced():
    """A kept-alive HTTP/1.0 response says Connection: keep-alive."""
    data, framer = head([], http10=True, body_len=0)
    assert b"connection: keep-alive\r\n" in data
    assert framer.keep_alive


@pytest.mark.parametrize(
    ("status", "no_body", "flagged"),
    [(204, False, True), (304, False, True), (101, False, True), (200, True, False)],
)
def test_bodiless_responses_drop_body(status, no_body, flagged):
    """HEAD, 1xx, 204 and 304 never carry a body; dropping it is flagged unless for HEAD
    (answering HEAD as GET and letting the server strip the body is normal)."""
    data, framer = head([], status=status, no_body=no_body, body_len=4)
    assert b"content-length" not in data and b"transfer-encoding" not in data
    assert framer.mode is (BodyMode.HEAD if no_body else BodyMode.NONE)
    assert framer.frame(b"body", False) == b""
    assert framer.dropped is flagged


@pytest.mark.parametrize(
    "headers",
    [
        [(b"x", b"a\r\nb: c")],
        [(b"x", b"a\rb")],
        [(b"x", b"a\nb")],
        [(b"x", b"a\x00b")],
        [(b"x\r\ny", b"1")],
        [(b"x bad", b"1")],
        [(b"x:y", b"1")],
        [(b"", b"1")],
        [(b"content-length", b"-1")],
        [(b"content-length", b"1"), (b"content-length", b"1")],
        [(b"content-length", b"1"), (b"transfer-encoding", b"chunked")],
    ],
)
def test_unsafe_headers_refused(headers):
    """CR, LF or NUL in a header, a name that is not a token, or contradictory framing, is
    refused."""
    with pytest.raises(InvalidResponseHeader):
        head(headers)


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        ([(b"x", "str")], "b'x'"),
        ([("x-str", b"v")], "'x-str'"),
        ([("x-str", "v")], "'x-str'"),
        ([(b"a", b"1", b"extra")], "not a (name, value) pair"),
        ([b"ab"], "header 97 has a int name"),
    ],
)
def test_non_bytes_header_refused(headers, named):
    """A str header name or value is refused, not silently encoded, and the message says
    what is wrong and names the header (issue 12 point 13)."""
    with pytest.raises(InvalidResponseHeader) as info:
        head(headers)
    assert named in str(info.value)
    if "pair" not in named:
        assert "header names and values must be bytes" in str(info.value)


def test_overflow_is_cut_and_closes():
    """Bytes beyond Content-Length are cut; the mismatch known up front says close."""
    data, framer = head([(b"content-length", b"3")], body_len=6)
    assert b"connection: close" in data
    assert framer.frame(b"abcdef", False) == b"abc"
    assert framer.overflow


def test_streamed_overflow_and_short():
    """Streaming past or short of Content-Length is flagged."""
    _, framer = head([(b"content-length", b"4")])
    assert framer.frame(b"abc", True) == b"abc"
    assert framer.frame(b"de", True) == b"d"
    assert framer.overflow
    _, framer = head([(b"content-length", b"4")])
    framer.frame(b"ab", False)
    assert framer.short and framer.remaining == 2


def test_app_headers_override_defaults():
    """An app's Server header replaces the default one; Connection: close is honoured."""
    data, framer = head([(b"Server", b"mine"), (b"connection", b"close")], body_len=0)
    assert data.count(b"erver:") == 1
    assert b"Server: mine" in data
    assert not framer.keep_alive
    assert data.count(b"onnection:") == 1


def test_simple_response():
    """corral's own responses are complete, plain text and closing."""
    data = simple_response(400, DEFAULTS, b"bad")
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert data.endswith(b"content-length: 3\r\nconnection: close\r\n\r\nbad")


def test_date_format():
    """Dates use the RFC 9110 IMF-fixdate format."""
    assert format_http_date(0) == b"Thu, 01 Jan 1970 00:00:00 GMT"


def test_date_clock_refreshes_once_a_second():
    """The Date value is refreshed by a loop timer, not per call."""
    changes: list[bytes] = []

    async def main() -> None:
        clock = DateClock(changes.append)
        clock.start(asyncio.get_running_loop())
        first = clock.value
        deadline = time.monotonic() + 3
        while clock.value == first and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        clock.stop()
        assert clock.value != first

    asyncio.run(main())
    assert changes


def test_state_header_block_follows_the_clock():
    """The pre-encoded default header block carries the current Date."""
    state = ServerState(Config(app=None, headers=(("X-A", "1"),)))
    assert state.header_block.startswith(b"server: corral\r\nx-a: 1\r\ndate: ")
    state._on_date_change(b"Thu, 01 Jan 1970 00:00:00 GMT")
    assert state.header_block.endswith(b"date: Thu, 01 Jan 1970 00:00:00 GMT\r\n")
    assert state.header_block_without({b"server"}).startswith(b"x-a: 1\r\n")
