"""The wire corpus: raw requests with their RFC-correct outcomes, for both parsers.

Each :class:`WireCase` is one request (raw bytes) with the status corral must answer,
whether the connection must close, and what the app must see. The same table drives the
sans-I/O parser tests (tests/test_parsers.py) and the real-socket tests
(tests/test_wire_corpus.py). Behind every case the tests pipeline :data:`FOLLOW_UP`:
after a refused request it must never be answered; after a served keep-alive request it
must be.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FOLLOW_UP = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


@dataclass(frozen=True)
class WireCase:
    id: str
    rfc: str  # the section that decides the outcome
    raw: bytes
    status: int = 200
    closes: bool | None = None  # None: closes exactly when status is an error
    seen: dict[str, Any] = field(default_factory=dict)  # method, raw_path, query, body, headers
    config: dict[str, Any] = field(default_factory=dict)  # Config overrides (limits)

    def closes_for(self) -> bool:
        if self.closes is not None:
            return self.closes
        return self.status >= 400


def req(
    line: bytes = b"GET / HTTP/1.1",
    *headers: bytes,
    body: bytes = b"",
    host: bool = True,
) -> bytes:
    """A raw request: request line, ``Host: x`` (unless host=False), headers, body."""
    lines = [line, *([b"Host: x"] if host else []), *headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def chunked(*body: bytes, trailer: bytes = b"") -> bytes:
    """A POST with a chunked body of the given raw chunk bytes."""
    return req(b"POST / HTTP/1.1", b"Transfer-Encoding: chunked") + b"".join(body) + trailer


_LIMIT10 = {"limit_request_body": 10}

CASES: list[WireCase] = [
    # --- request line: RFC 9112 §3 --------------------------------------------------------
    WireCase(
        "plain-get",
        "RFC 9112 §3",
        req(b"GET /a/b?x=1 HTTP/1.1"),
        seen={"method": "GET", "raw_path": b"/a/b", "query": b"x=1"},
    ),
    WireCase(
        "percent-encoded-path",
        "RFC 9112 §3.2.1",
        req(b"GET /a%20b HTTP/1.1"),
        seen={"raw_path": b"/a%20b", "path": "/a b"},
    ),
    WireCase("method-bad-char", "RFC 9110 §5.6.2 (token)", req(b"GE(T / HTTP/1.1"), 400),
    WireCase("method-at-sign", "RFC 9110 §5.6.2 (token)", req(b"G@T / HTTP/1.1"), 400),
    WireCase(
        "method-unknown-token",
        "RFC 9110 §9.1 (any token; the app, the origin server, answers it)",
        req(b"BREW /pot HTTP/1.1"),
        seen={"method": "BREW"},
    ),
    WireCase(
        "method-lowercase",
        "RFC 9110 §9.1 (methods are case-sensitive)",
        req(b"get / HTTP/1.1"),
        seen={"method": "get"},
    ),
    WireCase(
        "method-known-extension",
        "RFC 9110 §9.1",
        req(b"PATCH /p HTTP/1.1"),
        seen={"method": "PATCH"},
    ),
    WireCase("space-in-target", "RFC 9112 §3.2", req(b"GET /a b HTTP/1.1"), 400),
    WireCase("nul-in-target", "RFC 9112 §3.2", req(b"GET /a\x00b HTTP/1.1"), 400),
    WireCase("bare-cr-in-request-line", "RFC 9112 §2.2", req(b"GET /a\rb HTTP/1.1"), 400),
    WireCase("control-char-in-target", "RFC 9112 §3.2", req(b"GET /a\x01b HTTP/1.1"), 400),
    WireCase(
        "obs-text-in-target", "RFC 9112 §3.2 / RFC 3986 §2", req(b"GET /caf\xc3\xa9 HTTP/1.1"), 400
    ),
    WireCase("double-space", "RFC 9112 §3", req(b"GET  / HTTP/1.1"), 400),
    WireCase("tab-separator", "RFC 9112 §3", req(b"GET\t/ HTTP/1.1"), 400),
    WireCase("trailing-space", "RFC 9112 §3", req(b"GET / HTTP/1.1 "), 400),
    WireCase("version-2.0", "RFC 9110 §15.6.6 (505)", req(b"GET / HTTP/2.0"), 505),
    WireCase("version-0.9", "RFC 9110 §15.6.6 (505)", req(b"GET / HTTP/0.9"), 505),
    WireCase("version-1.2", "RFC 9110 §15.6.6 (505)", req(b"GET / HTTP/1.2"), 505),
    WireCase(
        "version-lowercase",
        "RFC 9112 §2.3 (HTTP-name is case-sensitive)",
        req(b"GET / http/1.1"),
        400,
    ),
    WireCase("version-two-digits", "RFC 9112 §2.3", req(b"GET / HTTP/1.10"), 400),
    WireCase("version-missing", "RFC 9112 §3", req(b"GET /"), 400),
    WireCase(
        "absolute-form",
        "RFC 9112 §3.2.2",
        req(b"GET http://example.com/p/q?x=1 HTTP/1.1"),
        seen={"raw_path": b"/p/q", "query": b"x=1", "headers": {b"host": b"example.com"}},
    ),
    WireCase(
        "absolute-form-no-path",
        "RFC 9112 §3.2.2",
        req(b"GET http://example.com HTTP/1.1"),
        seen={"raw_path": b"/", "query": b""},
    ),
    WireCase(
        "absolute-form-empty-host",
        "RFC 9110 §4.2.1 (empty host is invalid)",
        req(b"GET http:///p HTTP/1.1"),
        400,
    ),
    WireCase(
        "absolute-form-userinfo",
        "RFC 9110 §4.2.4 (userinfo is invalid in http URIs)",
        req(b"GET http://u@example.com/p HTTP/1.1"),
        400,
    ),
    WireCase(
        "absolute-form-other-scheme",
        "RFC 9112 §3.2.2 (corral is an http origin server)",
        req(b"GET ftp://example.com/p HTTP/1.1"),
        400,
    ),
    WireCase("fragment-in-target", "RFC 9112 §3.2", req(b"GET /a#frag HTTP/1.1"), 400),
    WireCase(
        "unknown-method-and-bad-host",
        "RFC 9112 §3.2 (400 wins over 501, on both parsers)",
        req(b"BREW / HTTP/1.1", host=False),
        400,
    ),
    WireCase(
        "asterisk-options",
        "RFC 9112 §3.2.4",
        req(b"OPTIONS * HTTP/1.1"),
        seen={"method": "OPTIONS", "raw_path": b"*"},
    ),
    WireCase("asterisk-get", "RFC 9112 §3.2.4", req(b"GET * HTTP/1.1"), 400),
    WireCase("authority-form-get", "RFC 9112 §3.2.3", req(b"GET example.com:80 HTTP/1.1"), 400),
    WireCase("relative-target", "RFC 9112 §3.2", req(b"GET a/b HTTP/1.1"), 400),
    WireCase(
        "connect",
        "RFC 9110 §9.3.6 (corral is not a proxy: 501)",
        req(b"CONNECT example.com:443 HTTP/1.1"),
        501,
    ),
    WireCase(
        "empty-lines-before-request", "RFC 9112 §2.2", b"\r\n\r\n" + req(), seen={"method": "GET"}
    ),
    WireCase(
        "request-line-too-long",
        "RFC 9112 §3 (414)",
        req(b"GET /" + b"a" * 16400 + b" HTTP/1.1"),
        414,
    ),
    # --- Host: RFC 9112 §3.2 ---------------------------------------------------------
    WireCase("host-missing", "RFC 9112 §3.2", req(host=False), 400),
    WireCase("host-twice", "RFC 9112 §3.2", req(b"GET / HTTP/1.1", b"Host: y"), 400),
    WireCase("host-twice-http10", "RFC 9112 §3.2", req(b"GET / HTTP/1.0", b"Host: y"), 400),
    WireCase(
        "host-with-space",
        "RFC 9112 §3.2, RFC 3986 §3.2.2",
        req(b"GET / HTTP/1.1", b"Host: a b", host=False),
        400,
    ),
    WireCase(
        "host-with-slash",
        "RFC 9112 §3.2, RFC 3986 §3.2.2",
        req(b"GET / HTTP/1.1", b"Host: a/b", host=False),
        400,
    ),
    WireCase(
        "host-with-userinfo", "RFC 9110 §7.2", req(b"GET / HTTP/1.1", b"Host: u@a", host=False), 400
    ),
    WireCase(
        "host-ipv6-port",
        "RFC 9110 §7.2",
        req(b"GET / HTTP/1.1", b"Host: [::1]:8080", host=False),
        seen={"headers": {b"host": b"[::1]:8080"}},
    ),
    WireCase(
        "host-empty",
        "RFC 9110 §7.2 (empty when the URI has no authority)",
        req(b"GET / HTTP/1.1", b"Host:", host=False),
        seen={"headers": {b"host": b""}},
    ),
    WireCase(
        "http10-without-host",
        "RFC 9112 §3.2",
        req(b"GET / HTTP/1.0", host=False),
        closes=True,
        seen={"method": "GET"},
    ),
    # --- header fields: RFC 9112 §5 ------------------------------------------------------
    WireCase("space-before-colon", "RFC 9112 §5.1", req(b"GET / HTTP/1.1", b"X-A : 1"), 400),
    WireCase("invalid-name-char", "RFC 9112 §5.1", req(b"GET / HTTP/1.1", b"X(A): 1"), 400),
    WireCase("empty-name", "RFC 9112 §5.1", req(b"GET / HTTP/1.1", b": 1"), 400),
    WireCase("no-colon", "RFC 9112 §5", req(b"GET / HTTP/1.1", b"X-A 1"), 400),
    WireCase("nul-in-value", "RFC 9110 §5.5", req(b"GET / HTTP/1.1", b"X-A: a\x00b"), 400),
    WireCase("bare-cr-in-value", "RFC 9110 §5.5", req(b"GET / HTTP/1.1", b"X-A: a\rb"), 400),
    WireCase(
        "del-in-value", "RFC 9110 §5.5 (other CTLs)", req(b"GET / HTTP/1.1", b"X-A: a\x7fb"), 400
    ),
    WireCase(
        "bare-lf-field-line", "RFC 9112 §2.2", b"GET / HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n", 400
    ),
    WireCase("bare-lf-request-line", "RFC 9112 §2.2", b"GET / HTTP/1.1\nHost: x\r\n\r\n", 400),
    WireCase("bare-lf-head-end", "RFC 9112 §2.2", b"GET / HTTP/1.1\nHost: x\n\n", 400),
    WireCase("obs-fold-space", "RFC 9112 §5.2", req(b"GET / HTTP/1.1", b"X-A: 1", b" folded"), 400),
    WireCase("obs-fold-tab", "RFC 9112 §5.2", req(b"GET / HTTP/1.1", b"X-A: 1", b"\tfolded"), 400),
    WireCase(
        "value-trimmed",
        "RFC 9112 §5.1",
        req(b"GET / HTTP/1.1", b"X-A: \t v  w \t "),
        seen={"headers": {b"x-a": b"v  w"}},
    ),
    WireCase(
        "value-empty",
        "RFC 9112 §5.1",
        req(b"GET / HTTP/1.1", b"X-A:"),
        seen={"headers": {b"x-a": b""}},
    ),
    WireCase(
        "value-obs-text",
        "RFC 9110 §5.5",
        req(b"GET / HTTP/1.1", b"X-A: caf\xc3\xa9"),
        seen={"headers": {b"x-a": b"caf\xc3\xa9"}},
    ),
    WireCase(
        "name-lowercased",
        "RFC 9110 §5.1",
        req(b"GET / HTTP/1.1", b"X-MiXeD: 1"),
        seen={"headers": {b"x-mixed": b"1"}},
    ),
    # --- Content-Length: RFC 9112 §6.2, §6.3 ------------------------------------------------
    WireCase(
        "content-length-body",
        "RFC 9112 §6.2",
        req(b"POST / HTTP/1.1", b"Content-Length: 5", body=b"hello"),
        seen={"body": b"hello"},
    ),
    WireCase(
        "content-length-ows",
        "RFC 9112 §5.1",
        req(b"POST / HTTP/1.1", b"Content-Length:  5 ", body=b"hello"),
        seen={"body": b"hello"},
    ),
    WireCase(
        "content-length-plus",
        "RFC 9112 §6.3",
        req(b"POST / HTTP/1.1", b"Content-Length: +5", body=b"hello"),
        400,
    ),
    WireCase(
        "content-length-negative",
        "RFC 9112 §6.3",
        req(b"POST / HTTP/1.1", b"Content-Length: -1"),
        400,
    ),
    WireCase(
        "content-length-hex",
        "RFC 9112 §6.3",
        req(b"POST / HTTP/1.1", b"Content-Length: 0x5", body=b"hello"),
        400,
    ),
    WireCase(
        "content-length-overflow",
        "RFC 9112 §6.3",
        req(b"POST / HTTP/1.1", b"Content-Length: 99999999999999999999999"),
        400,
    ),
    WireCase(
        "content-length-empty", "RFC 9112 §6.3", req(b"POST / HTTP/1.1", b"Content-Length:"), 400
    ),
    WireCase(
        "content-length-repeated-same",
        "RFC 9112 §6.3 (corral refuses even equal values)",
        req(b"POST / HTTP/1.1", b"Content-Length: 5", b"Content-Length: 5", body=b"hello"),
        400,
    ),
    WireCase(
        "content-length-list",
        "RFC 9112 §6.3 (corral refuses even equal values)",
        req(b"POST / HTTP/1.1", b"Content-Length: 5, 5", body=b"hello"),
        400,
    ),
    WireCase(
        "content-length-conflict",
        "RFC 9112 §6.3",
        req(b"POST / HTTP/1.1", b"Content-Length: 5", b"Content-Length: 6", body=b"hello!"),
        400,
    ),
    # --- Transfer-Encoding: RFC 9112 §6.1, §7 ---------------------------------------------
    WireCase(
        "te-and-cl",
        "RFC 9112 §6.1 (400 and close)",
        req(
            b"POST / HTTP/1.1",
            b"Content-Length: 3",
            b"Transfer-Encoding: chunked",
            body=b"0\r\n\r\n",
        ),
        400,
    ),
    WireCase(
        "te-chunked-twice",
        "RFC 9112 §6.1",
        req(b"POST / HTTP/1.1", b"Transfer-Encoding: chunked, chunked", body=b"0\r\n\r\n"),
        400,
    ),
    WireCase(
        "te-empty-element",
        "RFC 9112 §6.1 (framing a proxy may read differently: 400 and close)",
        req(b"POST / HTTP/1.1", b"Transfer-Encoding: , chunked", body=b"0\r\n\r\n"),
        400,
    ),
    WireCase(
        "te-final-not-chunked",
        "RFC 9112 §6.1",
        req(b"POST / HTTP/1.1", b"Transfer-Encoding: gzip"),
        400,
    ),
    WireCase(
        "te-chunked-then-gzip",
        "RFC 9112 §6.1",
        req(b"POST / HTTP/1.1", b"Transfer-Encoding: chunked, gzip"),
        400,
    ),
    WireCase(
        "te-unknown-coding",
        "RFC 9112 §6.1 (501)",
        req(b"POST / HTTP/1.1", b"Transfer-Encoding: foo, chunked", body=b"0\r\n\r\n"),
        501,
    ),
    WireCase(
        "te-gzip-chunked",
        "RFC 9112 §6.1 (501: corral decodes no other coding)",
        req(b"POST / HTTP/1.1", b"Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n"),
        501,
    ),
    WireCase(
        "te-split-fields",
        "RFC 9110 §5.3 (fields combine into one list)",
        req(
            b"POST / HTTP/1.1",
            b"Transfer-Encoding: gzip",
            b"Transfer-Encoding: chunked",
            body=b"0\r\n\r\n",
        ),
        501,
    ),
    WireCase(
        "te-http10",
        "RFC 9112 §6.1",
        req(b"POST / HTTP/1.0", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
        400,
    ),
    WireCase(
        "te-case-insensitive",
        "RFC 9112 §7 (codings are case-insensitive)",
        req(b"POST / HTTP/1.1", b"Transfer-Encoding: Chunked", body=b"3\r\nabc\r\n0\r\n\r\n"),
        seen={"body": b"abc"},
    ),
    WireCase(
        "te-trailing-tab",
        "RFC 9110 §5.5 (OWS around values)",
        req(b"POST / HTTP/1.1", b"Transfer-Encoding: chunked\t", body=b"2\r\nok\r\n0\r\n\r\n"),
        seen={"body": b"ok"},
    ),
    WireCase(
        "chunked-body",
        "RFC 9112 §7.1",
        chunked(b"5\r\nhello\r\n", b"6\r\n world\r\n", b"0\r\n\r\n"),
        seen={"body": b"hello world"},
    ),
    WireCase(
        "chunk-extensions-ignored",
        "RFC 9112 §7.1.1",
        chunked(b"5;name=value\r\nhello\r\n", b'0;a="q d"\r\n\r\n'),
        seen={"body": b"hello"},
    ),
    WireCase(
        "chunk-trailers-consumed",
        "RFC 9112 §7.1.2",
        chunked(b"5\r\nhello\r\n", b"0\r\n", trailer=b"X-Sum: 1\r\nX-T: 2\r\n\r\n"),
        seen={"body": b"hello"},
    ),
    WireCase(
        "chunk-size-uppercase-hex",
        "RFC 9112 §7.1",
        chunked(b"A\r\n0123456789\r\n", b"0\r\n\r\n"),
        seen={"body": b"0123456789"},
    ),
    WireCase("chunk-size-non-hex", "RFC 9112 §7.1", chunked(b"zz\r\nhello\r\n0\r\n\r\n"), 400),
    WireCase("chunk-size-0x", "RFC 9112 §7.1", chunked(b"0x5\r\nhello\r\n0\r\n\r\n"), 400),
    WireCase("chunk-size-negative", "RFC 9112 §7.1", chunked(b"-5\r\nhello\r\n0\r\n\r\n"), 400),
    WireCase(
        "chunk-size-overflow",
        "RFC 9112 §7.1",
        chunked(b"1ffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
        400,
    ),
    WireCase("chunk-size-empty", "RFC 9112 §7.1", chunked(b"\r\nhello\r\n0\r\n\r\n"), 400),
    WireCase("chunk-data-without-crlf", "RFC 9112 §7.1", chunked(b"5\r\nhelloXX0\r\n\r\n"), 400),
    WireCase("chunk-data-longer", "RFC 9112 §7.1", chunked(b"3\r\nhello\r\n0\r\n\r\n"), 400),
    WireCase("chunk-size-bare-lf", "RFC 9112 §7.1", chunked(b"5\nhello\r\n0\r\n\r\n"), 400),
    WireCase(
        "chunk-ext-whitespace",
        "RFC 9112 §7.1.1 (BWS around ';' and '=')",
        chunked(b"5 ;a=b\r\nhello\r\n", b'6; b = "c d"\r\n world\r\n', b"0\t; z\r\n\r\n"),
        seen={"body": b"hello world"},
    ),
    WireCase(
        "chunk-ext-whitespace-after-size-alone",
        "RFC 9112 §7.1 (BWS only before a chunk-ext)",
        chunked(b"5 \r\nhello\r\n0\r\n\r\n"),
        400,
    ),
    WireCase(
        "chunk-size-leading-zeros",
        "RFC 9112 §7.1 (chunk-size = 1*HEXDIG; zeros are not significant)",
        chunked(b"000000000000000000005\r\nhello\r\n", b"00000000000000000000000\r\n\r\n"),
        seen={"body": b"hello"},
    ),
    WireCase(
        "trailer-invalid-field",
        "RFC 9112 §7.1.2",
        chunked(b"5\r\nhello\r\n0\r\n", trailer=b"Bad Field: 1\r\n\r\n"),
        400,
    ),
    WireCase(
        "trailer-content-length",
        "RFC 9110 §6.5.1 (framing fields in trailers refused)",
        chunked(b"5\r\nhello\r\n0\r\n", trailer=b"Content-Length: 5\r\n\r\n"),
        400,
    ),
    WireCase(
        "trailer-connection-close-ignored",
        "RFC 9110 §6.5.1 (trailers can't change the connection)",
        chunked(b"5\r\nhello\r\n0\r\n", trailer=b"Connection: close\r\n\r\n"),
        seen={"body": b"hello"},
    ),
    # --- limits ----------------------------------------------------------------------------
    WireCase(
        "too-many-fields",
        "RFC 6585 §5 (431)",
        req(b"GET / HTTP/1.1", *[b"X-%d: 1" % i for i in range(201)]),
        431,
    ),
    WireCase(
        "field-too-large",
        "RFC 6585 §5 (431)",
        req(b"GET / HTTP/1.1", b"X-Big: " + b"a" * 32800),
        431,
    ),
    WireCase(
        "head-too-large",
        "RFC 6585 §5 (431)",
        req(b"GET / HTTP/1.1", *[b"X-%d: " % i + b"a" * 8000 for i in range(9)]),
        431,
    ),
    WireCase(
        "fields-at-limit",
        "RFC 6585 §5",
        req(b"GET / HTTP/1.1", *[b"X-%d: 1" % i for i in range(199)]),
        seen={"headers": {b"x-198": b"1"}},
    ),
    WireCase(
        "body-over-limit",
        "RFC 9110 §15.5.14 (413)",
        req(b"POST / HTTP/1.1", b"Content-Length: 11", body=b"hello world"),
        413,
        config=_LIMIT10,
    ),
    WireCase(
        "body-at-limit",
        "RFC 9110 §15.5.14",
        req(b"POST / HTTP/1.1", b"Content-Length: 10", body=b"0123456789"),
        seen={"body": b"0123456789"},
        config=_LIMIT10,
    ),
    WireCase(
        "chunked-over-limit",
        "RFC 9110 §15.5.14 (413)",
        chunked(b"6\r\nhello \r\n", b"6\r\nworld!\r\n", b"0\r\n\r\n"),
        413,
        config=_LIMIT10,
    ),
    WireCase(
        "expect-over-limit",
        "RFC 9110 §10.1.1 (413 without reading the body)",
        req(b"POST / HTTP/1.1", b"Content-Length: 100", b"Expect: 100-continue"),
        413,
        config=_LIMIT10,
    ),
    # --- connection management: RFC 9112 §9 ----------------------------------------------------
    WireCase(
        "connection-close",
        "RFC 9112 §9.6",
        req(b"GET / HTTP/1.1", b"Connection: close"),
        closes=True,
    ),
    WireCase("http10-default-close", "RFC 9112 §9.3", req(b"GET / HTTP/1.0"), closes=True),
    WireCase(
        "http10-keep-alive",
        "RFC 9112 §9.3 (keep-alive for 1.0)",
        req(b"GET / HTTP/1.0", b"Connection: keep-alive"),
        closes=False,
    ),
    WireCase(
        "http10-keep-alive-mixed-case",
        "RFC 9110 §7.6.1 (connection options are case-insensitive)",
        req(b"GET / HTTP/1.0", b"Connection: Keep-Alive"),
        closes=False,
    ),
    WireCase(
        "connection-token-list",
        "RFC 9110 §7.6.1",
        req(b"GET / HTTP/1.1", b"Connection: foo, Close"),
        closes=True,
    ),
]
