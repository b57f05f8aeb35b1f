"""Sans-I/O tests of the request reader: feed bytes, check the sink calls."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from corral.config import Config
from corral.worker.http1.parsers import ParseError, ParserLimits, RequestHead, RequestReader

from tests.wire_corpus import CASES, FOLLOW_UP, WireCase, chunked, req


@dataclass
class RecordingSink:
    """Records every parser callback; optionally halts on the first head."""

    halt: bool = False
    events: list[Any] = field(default_factory=list)

    def on_head(self, head: RequestHead) -> bool:
        self.events.append(head)
        return self.halt

    def on_body(self, data: bytes) -> None:
        assert isinstance(data, bytes)
        self.events.append(data)

    def on_message_complete(self) -> None:
        self.events.append("complete")


@dataclass
class Message:
    head: RequestHead
    body: bytes = b""
    complete: bool = False


def messages(events: list[Any]) -> list[Message]:
    """Group recorded events per request (body pieces joined)."""
    out: list[Message] = []
    for event in events:
        if isinstance(event, RequestHead):
            out.append(Message(event))
        elif event == "complete":
            out[-1].complete = True
        else:
            out[-1].body += event
    return out


def run(
    data: bytes, limits: ParserLimits | None = None, step: int | None = None
) -> tuple[list[Message], ParseError | None]:
    """Feed ``data`` (whole, or ``step`` bytes at a time); the messages and any error."""
    sink = RecordingSink()
    parser = RequestReader(sink, limits or ParserLimits())
    error = None
    try:
        if step is None:
            parser.feed(data)
        else:
            for i in range(0, len(data), step):
                parser.feed(data[i : i + step])
    except ParseError as exc:
        error = exc
    return messages(sink.events), error


def limits_for(case: WireCase) -> ParserLimits:
    return ParserLimits.from_config(Config(**case.config))


def check_case(case: WireCase, step: int | None) -> None:
    msgs, error = run(case.raw + FOLLOW_UP, limits_for(case), step)
    status = case.status
    assert all(m.head.raw_path != b"/smuggled" for m in msgs[:1]), case.id
    if status >= 400:
        assert error is not None, f"{case.id}: expected {status}, got {msgs}"
        assert error.status == status, f"{case.id}: {error.reason}"
        assert not any(m.head.raw_path == b"/smuggled" for m in msgs), case.id
        return
    assert error is None, f"{case.id}: unexpected {error}"
    first = msgs[0]
    assert first.complete
    assert first.head.keep_alive is not case.closes_for()
    expected = case.seen
    if "method" in expected:
        assert first.head.method == expected["method"]
    if "raw_path" in expected:
        assert first.head.raw_path == expected["raw_path"]
    if "query" in expected:
        assert first.head.query_string == expected["query"]
    assert first.body == expected.get("body", b"")
    for name, value in expected.get("headers", {}).items():
        assert [v for n, v in first.head.headers if n == name] == [value], case.id
    follow_ups = [m.head.raw_path for m in msgs[1:]]
    assert follow_ups == ([] if case.closes_for() else [b"/smuggled"]), case.id


@pytest.mark.smoke
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_corpus_case(case: WireCase) -> None:
    """Each corpus request gets its expected outcome, and nothing after a refusal is parsed."""
    check_case(case, None)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_corpus_case_trickled(case: WireCase) -> None:
    """The outcome is the same when the bytes arrive in 7-byte pieces."""
    check_case(case, 7)


@pytest.mark.smoke
def test_byte_at_a_time_pipeline() -> None:
    """Three pipelined requests fed one byte at a time give the same messages as one feed."""
    data = (
        req(b"POST /1 HTTP/1.1", b"Content-Length: 3", body=b"abc")
        + chunked(b"2\r\nde\r\n", b"0\r\n", trailer=b"T: 1\r\n\r\n")
        + b"\r\n"
        + req(b"GET /3?q HTTP/1.1")
    )
    whole, error = run(data)
    trickled, error2 = run(data, step=1)
    assert error is None and error2 is None
    shape = [(m.head.raw_path, m.body, m.complete) for m in whole]
    assert shape == [(b"/1", b"abc", True), (b"/", b"de", True), (b"/3", b"", True)]
    assert [(m.head.raw_path, m.body, m.complete) for m in trickled] == shape


def test_error_after_valid_requests() -> None:
    """Requests before a bad one are delivered in full; nothing after it is."""
    data = req(b"GET /1 HTTP/1.1") + req(b"GET /2 HTTP/1.1") + req(b"GET /3 HTTP/2.0") + FOLLOW_UP
    msgs, error = run(data)
    assert error is not None and error.status == 505
    assert [(m.head.raw_path, m.complete) for m in msgs] == [(b"/1", True), (b"/2", True)]


def test_halt_keeps_unconsumed_bytes() -> None:
    """A sink that halts on an upgrade request gets every later byte from unconsumed()."""
    sink = RecordingSink(halt=True)
    parser = RequestReader(sink, ParserLimits())
    head = req(b"GET /ws HTTP/1.1", b"Connection: Upgrade", b"Upgrade: WebSocket", b"Sec-X: 1")
    parser.feed(head + b"\x81\x05")
    parser.feed(b"hello")
    assert len(sink.events) == 1
    request = sink.events[0]
    assert request.upgrade == b"websocket"
    assert parser.unconsumed() == b"\x81\x05hello"


def test_upgrade_not_taken_continues() -> None:
    """When the sink declines an upgrade, the next pipelined request is still parsed."""
    data = req(b"GET /a HTTP/1.1", b"Connection: upgrade", b"Upgrade: h2c") + req(
        b"GET /b HTTP/1.1"
    )
    msgs, error = run(data)
    assert error is None
    assert [(m.head.raw_path, m.head.upgrade) for m in msgs] == [(b"/a", b"h2c"), (b"/b", None)]


@pytest.mark.parametrize("step", [None, 1])
@pytest.mark.parametrize(
    "framing",
    [(b"Content-Length: 5", b"hello"), (b"Transfer-Encoding: chunked", b"5\r\nhello\r\n0\r\n\r\n")],
    ids=["length", "chunked"],
)
def test_declined_upgrade_keeps_its_body(step: int | None, framing: tuple[bytes, bytes]) -> None:
    """An upgrade request served as plain HTTP gets its whole body, then the next request.

    llhttp stops parsing at an upgrade request; the adapter must not lose the body.
    """
    field, body = framing
    data = req(b"POST /a HTTP/1.1", b"Connection: upgrade", b"Upgrade: websocket", field)
    msgs, error = run(data + body + req(b"GET /b HTTP/1.1"), step=step)
    assert error is None
    assert [(m.head.raw_path, m.body, m.complete) for m in msgs] == [
        (b"/a", b"hello", True),
        (b"/b", b"", True),
    ]


def test_upgrade_needs_connection_token() -> None:
    """An Upgrade header without the Connection: upgrade token is not an upgrade."""
    msgs, _ = run(req(b"GET / HTTP/1.1", b"Upgrade: websocket"))
    assert msgs[0].head.upgrade is None


@pytest.mark.parametrize(
    ("line", "headers", "expect"),
    [
        (b"POST / HTTP/1.1", [b"Expect: 100-continue"], True),
        (b"POST / HTTP/1.1", [b"Expect: 100-Continue"], True),
        (b"POST / HTTP/1.0", [b"Expect: 100-continue"], False),
        (b"POST / HTTP/1.1", [], False),
    ],
)
def test_expect_continue(line: bytes, headers: list[bytes], expect: bool) -> None:
    """expect_continue is set for 100-continue on HTTP/1.1 only (never for HTTP/1.0)."""
    msgs, error = run(req(line, b"Content-Length: 0", *headers))
    assert error is None
    assert msgs[0].head.expect_continue is expect


def test_content_length_limit_before_body() -> None:
    """A Content-Length over the body limit is refused before on_head, body unread."""
    sink = RecordingSink()
    parser = RequestReader(sink, ParserLimits(body=10))
    with pytest.raises(ParseError) as info:
        parser.feed(req(b"POST / HTTP/1.1", b"Content-Length: 11"))
    assert info.value.status == 413
    assert sink.events == []


def test_chunked_limit_before_chunk_data() -> None:
    """A chunk size that would pass the body limit is refused before its data arrives."""
    sink = RecordingSink()
    parser = RequestReader(sink, ParserLimits(body=10))
    parser.feed(chunked(b"4\r\nabcd\r\n"))
    with pytest.raises(ParseError) as info:
        parser.feed(b"7\r\n")
    assert info.value.status == 413
    assert [e for e in sink.events if isinstance(e, bytes)] == [b"abcd"]


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET /" + b"a" * 200, 414),  # no CRLF yet, already past the line limit
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 100, 431),  # head never ends
        (b"GET / HTTP/1.1\nHost: x", 400),  # a bare LF is refused before the head ends
        (b"GET / HTTP/1.1\rHost: x\r\r", 400),  # and so is a bare CR (issue 13 point 6)
        (b"GET / HTTP/1.1\r\nHost: x\rY: z", 400),
    ],
)
def test_unfinished_head_refused_early(data: bytes, status: int) -> None:
    """A head that can only be refused is refused before it ends, keeping buffers bounded."""
    parser = RequestReader(RecordingSink(), ParserLimits(request_line=100, head_size=500))
    with pytest.raises(ParseError) as info:
        parser.feed(data)
    assert info.value.status == status


def test_custom_limits() -> None:
    """Configured limits apply: fields count, field size, request line."""
    limits = ParserLimits(request_line=20, fields=2, field_size=30)
    assert run(req(b"GET /" + b"a" * 20 + b" HTTP/1.1"), limits)[1].status == 414  # type: ignore[union-attr]
    too_many = req(b"GET / HTTP/1.1", b"A: 1", b"B: 2")
    assert run(too_many, limits)[1].status == 431  # type: ignore[union-attr]
    too_big = req(b"GET / HTTP/1.1", b"A: " + b"x" * 30)
    assert run(too_big, limits)[1].status == 431  # type: ignore[union-attr]
    assert run(req(b"GET / HTTP/1.1", b"A: 1"), limits)[1] is None


def test_nothing_parsed_after_close_or_failure() -> None:
    """After a non-keep-alive request or a refusal, later feeds are ignored."""
    sink = RecordingSink()
    parser = RequestReader(sink, ParserLimits())
    parser.feed(req(b"GET / HTTP/1.1", b"Connection: close"))
    parser.feed(req(b"GET /late HTTP/1.1"))
    assert len(messages(sink.events)) == 1
    sink = RecordingSink()
    parser = RequestReader(sink, ParserLimits())
    with pytest.raises(ParseError):
        parser.feed(b"BAD\x00 / HTTP/1.1\r\n\r\n")
    parser.feed(req(b"GET /late HTTP/1.1"))
    assert sink.events == []


def test_head_fields() -> None:
    """The head carries version, lower-cased ordered headers and framing facts."""
    msgs, _ = run(
        req(
            b"PUT /x?a=1&b HTTP/1.1", b"Content-Type: text/plain", b"Content-Length: 2", body=b"ok"
        ),
    )
    head = msgs[0].head
    assert (head.method, head.http_version, head.query_string) == ("PUT", "1.1", b"a=1&b")
    assert head.headers == [
        (b"host", b"x"),
        (b"content-type", b"text/plain"),
        (b"content-length", b"2"),
    ]
    assert (head.content_length, head.chunked, head.keep_alive) == (2, False, True)


def test_leading_empty_lines_between_requests() -> None:
    """Empty lines between pipelined requests are skipped (RFC 9112 §2.2)."""
    data = req() + b"\r\n\r\n\r\n" + req(b"GET /2 HTTP/1.1")
    msgs, error = run(data, step=1)
    assert error is None
    assert [m.head.raw_path for m in msgs] == [b"/", b"/2"]


def test_limits_from_config() -> None:
    """ParserLimits mirrors the config, the h11 option overriding the head size."""
    config = Config(
        limit_request_line=100,
        limit_request_fields=5,
        limit_request_field_size=200,
        limit_request_body=7,
        h11_max_incomplete_event_size=1000,
    )
    assert ParserLimits.from_config(config) == ParserLimits(100, 5, 200, 1000, 7)
