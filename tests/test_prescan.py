"""Unit tests of the strict request-head pre-scan and the chunk scanner (no sockets)."""

from __future__ import annotations

import pytest
from corral.worker.http1.chunked import ChunkScanner
from corral.worker.http1.prescan import (
    ParseError,
    ParserLimits,
    check_partial_head,
    interpret,
    scan_head,
)

LIMITS = ParserLimits()


def head(*lines: bytes) -> bytes:
    return b"\r\n".join(lines) + b"\r\n\r\n"


def status_of(raw: bytes, limits: ParserLimits = LIMITS) -> int:
    """The status scan_head + interpret give ``raw`` (200 when accepted)."""
    try:
        method, target, version, fields = scan_head(raw, limits)
        interpret(method, target, version, fields, limits)
    except ParseError as exc:
        return exc.status
    return 200


def test_scan_head_splits_and_normalises() -> None:
    """Names are lower-cased, values trimmed, order and duplicates kept."""
    raw = head(b"GET /p?q HTTP/1.0", b"Host:  h ", b"X-A:\tone two\t", b"x-a: 2", b"Empty:")
    method, target, version, fields = scan_head(raw, LIMITS)
    assert (method, target, version) == (b"GET", b"/p?q", "1.0")
    assert fields == [(b"host", b"h"), (b"x-a", b"one two"), (b"x-a", b"2"), (b"empty", b"")]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (head(b"GET / HTTP/1.1", b" folded"), "obs-fold"),
        (head(b"GET / HTTP/1.1", b"A : 1"), "whitespace before colon"),
        (head(b"GET / HTTP/1.1", b": 1"), "empty header name"),
        (head(b"GET / HTTP/1.1", b"A\x01: 1"), "invalid header name"),
        (head(b"GET / HTTP/1.1", b"A: \x00"), "NUL or CR"),
        (head(b"GET / HTTP/1.1", b"A 1"), "without colon"),
        (head(b"G(T / HTTP/1.1"), "invalid method"),
        (head(b"GET /\x7f HTTP/1.1"), "invalid request target"),
        (head(b"GET / HTTP/1"), "malformed HTTP version"),
        (head(b"GET / HTTP/1.1 x"), "malformed request line"),
        (head(b"GET /\x00 HTTP/1.1"), "NUL or CR"),
    ],
)
def test_scan_head_reasons(raw: bytes, reason: str) -> None:
    """Each grammar failure is a 400 whose reason names the problem for the log line."""
    with pytest.raises(ParseError) as info:
        scan_head(raw, LIMITS)
    assert info.value.status == 400
    assert reason in info.value.reason


def test_bare_lf_inside_value_refused() -> None:
    """A bare LF can't hide a second field inside one line's value."""
    assert status_of(b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\nB: 2\r\n\r\n") == 400


def test_long_whitespace_runs_parse() -> None:
    """Values with long inner whitespace runs still parse (linear-time pattern)."""
    value = b"a" + b" " * 8000 + b"b"
    _, _, _, fields = scan_head(head(b"GET / HTTP/1.1", b"Host: x", b"V: " + value + b"  "), LIMITS)
    assert fields[1] == (b"v", value)


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        (b"1.1", None, True),
        (b"1.1", b"close", False),
        (b"1.1", b"Keep-Alive, CLOSE", False),
        (b"1.1", b"closed", True),
        (b"1.0", None, False),
        (b"1.0", b"keep-alive", True),
        (b"1.0", b"keep-alive, close", False),
    ],
)
def test_keep_alive(version: bytes, connection: bytes | None, keep_alive: bool) -> None:
    """Keep-alive follows RFC 9112 §9.3 from the version and Connection options."""
    lines = [b"GET / HTTP/" + version, b"Host: x"]
    if connection is not None:
        lines.append(b"Connection: " + connection)
    method, target, v, fields = scan_head(head(*lines), LIMITS)
    assert interpret(method, target, v, fields, LIMITS).keep_alive is keep_alive


@pytest.mark.parametrize(
    ("host", "status"),
    [
        (b"example.com", 200),
        (b"example.com:8080", 200),
        (b"127.0.0.1", 200),
        (b"[2001:db8::1]:443", 200),
        (b"", 200),
        (b"a b", 400),
        (b"a/b", 400),
        (b"a@b", 400),
        (b"[::1", 400),
        (b"a:b", 400),
    ],
)
def test_host_values(host: bytes, status: int) -> None:
    """Host must be uri-host [":" port] (RFC 9110 §7.2)."""
    assert status_of(head(b"GET / HTTP/1.1", b"Host: " + host)) == status


@pytest.mark.parametrize(
    ("codings", "status"),
    [
        (b"chunked", 200),
        (b"CHUNKED", 200),
        (b"chunked,", 400),  # empty list elements refused: framing must be unambiguous
        (b", chunked", 400),
        (b"gzip,,chunked", 400),
        (b"", 400),
        (b"gzip", 400),
        (b"chunked, gzip", 400),
        (b"chunked, chunked", 400),
        (b"chunked;q=1", 400),
        (b"gzip, chunked", 501),
        (b"identity, chunked", 501),
    ],
)
def test_transfer_codings(codings: bytes, status: int) -> None:
    """Only chunked (once, last) is accepted; other codings are 501 (RFC 9112 §6.1)."""
    raw = head(b"POST / HTTP/1.1", b"Host: x", b"Transfer-Encoding: " + codings)
    assert status_of(raw) == status


def test_unknown_methods_reach_the_app() -> None:
    """Any token is a method: an unknown one is the app's to answer, whatever --http says."""
    method, target, version, fields = scan_head(head(b"BREW / HTTP/1.1", b"Host: x"), LIMITS)
    assert interpret(method, target, version, fields, LIMITS).method == "BREW"


def test_absolute_form_replaces_host() -> None:
    """The target's authority replaces the Host field (RFC 9112 §3.2.2)."""
    raw = head(b"GET HTTPS://Example.com:8443/a?b HTTP/1.1", b"Host: other")
    method, target, version, fields = scan_head(raw, LIMITS)
    request = interpret(method, target, version, fields, LIMITS)
    assert (request.raw_path, request.query_string) == (b"/a", b"b")
    assert request.headers == [(b"host", b"Example.com:8443")]


def test_limits_order() -> None:
    """414 for the request line and 431 for fields are checked before the grammar."""
    limits = ParserLimits(request_line=20, fields=1, field_size=10, head_size=100)
    assert status_of(head(b"GET /" + b"a" * 10 + b" HTTP/1.1", b"Host: x"), limits) == 414
    assert status_of(head(b"GET /" + b"a" * 5 + b" HTTP/1.1", b"Host: x"), limits) == 200
    assert status_of(head(b"GET / HTTP/1.1", b"Host: x", b"A: 1"), limits) == 431
    assert status_of(head(b"GET / HTTP/1.1", b"Host: " + b"x" * 10), limits) == 431
    assert status_of(head(b"GET / HTTP/1.1", b"Host: " + b"x" * 4), limits) == 200
    assert status_of(head(b"GET / HTTP/1.1", b"H: " + b"x" * 100), limits) == 431


def test_check_partial_head() -> None:
    """An unfinished head is refused once it can only be refused."""
    limits = ParserLimits(request_line=14, head_size=50)
    for waiting in (b"GET / HTTP/1.1\r\nHo", b"", b"G", b"GET", b"GET ", b"\r", b"M-SEARCH"):
        check_partial_head(waiting, 0, 0, limits)
    for buf, status, reason in [
        (b"GET /aaaaaaaaaaaaaaaa", 414, "request line too long"),
        (b"GET / HTTP/1.1\r\n" + b"A: b\r\n" * 10, 431, "request head too large"),
        (b"GET / HTTP/1.1\nA", 400, "bare LF line ending"),
        (b"\nGET", 400, "bare LF line ending"),
        (b"GET /\rX: y\r\r", 400, "bare CR line ending"),
        (b"GET / HTTP/1.1\r\nA: b\rC", 400, "bare CR line ending"),
        (b"G\x00", 400, "invalid method"),
        (b"GET\t/", 400, "invalid method"),
        (b"\x16\x03\x01\x00\xa5\x01", 400, "TLS handshake on a plain-HTTP port"),
    ]:
        with pytest.raises(ParseError) as info:
            check_partial_head(buf, 0, 0, limits)
        assert (info.value.status, info.value.reason) == (status, reason)


def scan_all(
    data: bytes, limits: ParserLimits = LIMITS, step: int = 0, out: list[bytes] | None = None
) -> tuple[int, bool]:
    """Run a ChunkScanner over ``data`` (in ``step``-byte growing prefixes); (end, done).

    The decoded chunk data is appended to ``out``."""
    scanner = ChunkScanner(limits)
    emit = (out if out is not None else []).append
    if not step:
        return scanner.scan(data, 0, emit), scanner.done
    pos = 0
    for end in range(step, len(data) + step, step):
        pos = scanner.scan(data[:end], pos, emit)
        if scanner.done:
            break
    return pos, scanner.done


@pytest.mark.parametrize("step", [0, 1, 3])
def test_chunk_scanner_finds_end(step: int) -> None:
    """The scanner stops exactly after the trailer section, in any split, with the data."""
    body = b"5;x=y\r\nhello\r\n1A\r\n" + b"z" * 26 + b"\r\n0\r\nT: 1\r\n\r\n"
    out: list[bytes] = []
    assert scan_all(body + b"NEXT", step=step, out=out) == (len(body), True)
    assert b"".join(out) == b"hello" + b"z" * 26


@pytest.mark.parametrize(
    "line", [b"1; a=b", b"1 ;a=b", b"1;a = b", b'1\t;\ta\t=\t"q d"', b"1;a;b=c ; d"]
)
def test_chunk_extension_whitespace(line: bytes) -> None:
    """RFC 9112 §7.1.1's optional whitespace around ';' and '=' is accepted."""
    out: list[bytes] = []
    assert scan_all(line + b"\r\nx\r\n0\r\n\r\n", out=out)[1]
    assert out == [b"x"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"g\r\n", 400),
        (b"0x1\r\n", 400),
        (b"-1\r\n", 400),
        (b" 1\r\n", 400),
        (b"1 \r\n", 400),
        (b"1;\r\n", 400),
        (b"1; a=\r\n", 400),
        (b'1;a="unterminated\r\n', 400),
        (b"1000000000000000\r\n", 400),
        (b"1\r\nab", 400),
        (b"1\nab", 400),
        (b"0\r\nBad Name: 1\r\n\r\n", 400),
        (b"0\r\nA: 1\r\n" * 1 + b"B: 2\r\n" * 200, 431),
        (b"f" * 5000, 400),
        (b"0\r\n" + b"a" * 33000, 431),  # a trailer line that never ends
    ],
)
def test_chunk_scanner_refuses(body: bytes, status: int) -> None:
    """Bad chunk sizes, missing CRLFs and bad or oversized trailers are refused."""
    with pytest.raises(ParseError) as info:
        scan_all(body)
    assert info.value.status == status


def test_chunk_scanner_leading_zeros_and_limit() -> None:
    """Leading zeros don't count as overflow; the body limit counts declared sizes."""
    assert scan_all(b"0000000000000000000005\r\nhello\r\n0\r\n\r\n")[1]
    with pytest.raises(ParseError) as info:
        scan_all(b"5\r\nhello\r\n6\r\n", ParserLimits(body=10))
    assert info.value.status == 413
