"""The two request parsers (httptools and h11) behind one sans-I/O interface.

Both adapters share :class:`_Framer`, which owns the byte buffer, finds each request head,
runs the strict pre-scan (:mod:`corral.worker.http1.prescan`) on it, and decides where each body
ends; the parser library then parses exactly those bytes. So the libraries only ever see
input that is already known to be well formed, pipelined requests are split by corral
itself, and both adapters give the same answer to every input.

The connection protocol implements :class:`ParserSink`; ``make_parser`` builds a parser:

    parser = make_parser("httptools", sink, ParserLimits.from_config(config))
    parser.feed(data)          # calls sink.on_head / on_body / on_message_complete
"""

from __future__ import annotations

import enum
from typing import Any, Protocol

from corral.worker.http1.chunked import ChunkScanner
from corral.worker.http1.prescan import (
    ParseError,
    ParserLimits,
    RequestHead,
    check_partial_head,
    interpret,
    scan_head,
)

__all__ = [
    "ParseError",
    "ParserLimits",
    "ParserSink",
    "RequestHead",
    "RequestParser",
    "make_parser",
]


class ParserSink(Protocol):
    """What a parser calls; implemented by the HTTP/1.1 connection protocol."""

    def on_head(self, head: RequestHead) -> bool:
        """A request head arrived. Return True to halt parsing (upgrade hand-off)."""
        ...

    def on_body(self, data: bytes) -> None: ...

    def on_message_complete(self) -> None: ...


class RequestParser(Protocol):
    def feed(self, data: bytes) -> None:
        """Parse ``data``, calling the sink; raises :class:`ParseError` on a bad request."""
        ...

    def unconsumed(self) -> bytes:
        """The bytes after the head on which the sink halted parsing."""
        ...


class _State(enum.Enum):
    HEAD = "head"  # waiting for (the rest of) a request head
    BODY_LENGTH = "body-length"  # reading a Content-Length body
    BODY_CHUNKED = "body-chunked"  # reading a chunked body
    HALTED = "halted"  # the sink took over the connection; bytes are kept for it
    CLOSED = "closed"  # a request without keep-alive finished; nothing more is parsed
    FAILED = "failed"  # a ParseError was raised; nothing more is parsed


_EMPTY = b""


class _Framer:
    """Buffering, head detection, pre-scan and body framing shared by both adapters."""

    __slots__ = (
        "_buf",
        "_chunks",
        "_keep_alive",
        "_limits",
        "_remaining",
        "_scanned",
        "_sink",
        "_state",
    )

    def __init__(self, sink: ParserSink, limits: ParserLimits) -> None:
        self._sink = sink
        self._limits = limits
        self._buf: bytes | bytearray = _EMPTY
        self._state = _State.HEAD
        self._remaining = 0
        self._chunks: ChunkScanner | None = None
        self._keep_alive = True
        self._scanned = 0  # how far the pending head has been searched for its end

    # --- adapter hooks ------------------------------------------------------------
    def _parse_head(self, head: bytes) -> RequestHead:
        raise NotImplementedError

    def _feed_body(self, data: bytes | memoryview) -> None:
        """Hand framed body bytes (raw, chunked framing included) to the library."""
        raise NotImplementedError

    def _finish_message(self) -> None:
        """Check that the library saw the end of the message too."""
        raise NotImplementedError

    # --- the interface ------------------------------------------------------------
    def unconsumed(self) -> bytes:
        return bytes(self._buf) if self._state is _State.HALTED else _EMPTY

    def feed(self, data: bytes) -> None:
        state = self._state
        if state is _State.HALTED:
            self._buf = bytes(self._buf) + data
            return
        if state is _State.CLOSED or state is _State.FAILED:
            return  # later bytes are never parsed
        buf = self._buf
        if buf:
            if isinstance(buf, bytes):
                buf = bytearray(buf)
            buf += data
        else:
            buf = data
        try:
            pos = self._run(buf)
        except ParseError:
            self._state = _State.FAILED
            self._buf = _EMPTY
            raise
        if self._state is _State.HALTED:
            self._buf = buf[pos:]
        elif pos >= len(buf) or self._state is _State.CLOSED:
            self._buf = _EMPTY
        elif pos:
            self._buf = buf[pos:]
        else:
            self._buf = buf

    def _run(self, buf: bytes | bytearray) -> int:
        """Process as much of ``buf`` as possible; returns how much was consumed."""
        pos = 0
        end = len(buf)
        sink = self._sink
        limits = self._limits
        while pos < end:
            state = self._state
            if state is _State.HEAD:
                while buf[pos] == 0x0D and buf[pos + 1 : pos + 2] == b"\n":
                    pos += 2  # RFC 9112 §2.2: ignore empty lines before a request line
                    self._scanned = 0
                    if pos >= end:
                        return pos
                head_end = buf.find(b"\r\n\r\n", max(pos, pos + self._scanned - 3))
                if head_end < 0:
                    check_partial_head(buf, pos, pos + self._scanned, limits)
                    self._scanned = end - pos
                    return pos
                head_end += 4
                self._scanned = 0
                if pos == 0 and head_end == end and isinstance(buf, bytes):
                    head = buf
                else:
                    head = bytes(buf[pos:head_end])
                request = self._parse_head(head)
                pos = head_end
                if sink.on_head(request):
                    self._state = _State.HALTED
                    return pos
                self._keep_alive = request.keep_alive
                if request.chunked:
                    self._state = _State.BODY_CHUNKED
                    self._chunks = ChunkScanner(limits)
                elif request.content_length:
                    self._state = _State.BODY_LENGTH
                    self._remaining = request.content_length
                elif not self._complete():
                    return end
            elif state is _State.BODY_LENGTH:
                take = min(self._remaining, end - pos)
                if pos == 0 and take == end and isinstance(buf, bytes):
                    self._feed_body(buf)
                else:
                    with memoryview(buf) as view:  # no copy: the library copies anyway
                        self._feed_body(view[pos : pos + take])
                pos += take
                self._remaining -= take
                if self._remaining:
                    return pos
                if not self._complete():
                    return end
            elif state is _State.BODY_CHUNKED:
                chunks = self._chunks
                if chunks is None:  # pragma: no cover - set together with the state
                    raise ParseError(400, "internal framing error")
                new_pos = chunks.scan(buf, pos)
                if new_pos > pos:
                    with memoryview(buf) as view:
                        self._feed_body(view[pos:new_pos])
                pos = new_pos
                if not chunks.done:
                    return pos
                if not self._complete():
                    return end
            else:
                return pos
        return pos

    def _complete(self) -> bool:
        """End the current message; False when the connection takes no more requests."""
        self._finish_message()
        self._chunks = None
        self._sink.on_message_complete()
        if self._keep_alive:
            self._state = _State.HEAD
            return True
        self._state = _State.CLOSED
        return False


# --- httptools ------------------------------------------------------------------------
_LLHTTP_CANDIDATES = (
    b"DELETE GET HEAD POST PUT CONNECT OPTIONS TRACE COPY LOCK MKCOL MOVE PROPFIND PROPPATCH"
    b" SEARCH UNLOCK BIND REBIND UNBIND ACL REPORT MKACTIVITY CHECKOUT MERGE M-SEARCH NOTIFY"
    b" SUBSCRIBE UNSUBSCRIBE PATCH PURGE MKCALENDAR LINK UNLINK SOURCE QUERY"
).split()
_llhttp_methods: frozenset[bytes] | None = None


def _llhttp_known_methods() -> frozenset[bytes]:
    """The methods this build of llhttp parses as HTTP, probed once per process."""
    global _llhttp_methods
    if _llhttp_methods is None:
        import httptools

        known = set()
        for method in _LLHTTP_CANDIDATES:
            probe = httptools.HttpRequestParser(_LlhttpCallbacks(None))
            try:
                probe.feed_data(method + b" / HTTP/1.1\r\nHost: a\r\n\r\n")
            except httptools.HttpParserUpgrade:
                known.add(method)  # CONNECT
            except httptools.HttpParserError:
                continue
            known.add(method)
        _llhttp_methods = frozenset(known)
    return _llhttp_methods


class _LlhttpCallbacks:
    """The only callbacks llhttp gets: none per header (corral's pre-scan has the headers),
    the sink's own ``on_body`` (no extra Python frame per body piece), and completion."""

    __slots__ = ("complete", "on_body")

    def __init__(self, on_body: Any) -> None:
        self.on_body = on_body
        self.complete = False

    def on_message_complete(self) -> None:
        self.complete = True


class HttptoolsParser(_Framer):
    """The fast path: llhttp (C) parses, corral's pre-scan decides."""

    __slots__ = ("_callbacks", "_httptools", "_known", "_parser")

    def __init__(self, sink: ParserSink, limits: ParserLimits) -> None:
        import httptools

        super().__init__(sink, limits)
        self._httptools = httptools
        self._known = _llhttp_known_methods()
        self._callbacks = _LlhttpCallbacks(sink.on_body)
        self._parser: Any = httptools.HttpRequestParser(self._callbacks)

    def _llhttp_feed(self, data: bytes | memoryview) -> None:
        try:
            self._parser.feed_data(data)
        except self._httptools.HttpParserUpgrade:
            # llhttp stops for good after an upgrade request; a fresh parser takes the
            # next request if the sink did not take over the connection.
            self._parser = self._httptools.HttpRequestParser(self._callbacks)
        except self._httptools.HttpParserInvalidMethodError as exc:
            raise ParseError(501, "method not implemented") from exc
        except self._httptools.HttpParserError as exc:
            raise ParseError(400, f"rejected by httptools: {exc}") from exc

    def _parse_head(self, head: bytes) -> RequestHead:
        method, target, version, fields = scan_head(head, self._limits)
        request = interpret(method, target, version, fields, self._limits, self._known)
        if request.upgrade is not None or b"\t" in head:
            # llhttp gets a rebuilt head in two rare cases:
            # - it refuses a tab next to some values (Transfer-Encoding) that RFC 9110 §5.5
            #   makes optional whitespace, so values go in trimmed;
            # - it stops at an upgrade request and would never parse its body, while the
            #   sink may serve that request as plain HTTP; corral has already read the
            #   upgrade from the pre-scan, so llhttp gets the head without Upgrade.
            kept = [n + b": " + v + b"\r\n" for n, v in fields if n != b"upgrade"]
            head = b"".join([head[: head.find(b"\r\n") + 2], *kept, b"\r\n"])
        self._llhttp_feed(head)
        return request

    def _feed_body(self, data: bytes | memoryview) -> None:
        self._llhttp_feed(data)

    def _finish_message(self) -> None:
        if not self._callbacks.complete:
            raise ParseError(400, "httptools disagrees on message framing")
        self._callbacks.complete = False
        if self._chunks is not None and self._chunks.had_trailers:
            # llhttp applies a Connection field in trailers and would then refuse the next
            # request; corral decides keep-alive from the head alone, so start afresh.
            self._parser = self._httptools.HttpRequestParser(self._callbacks)


# --- h11 ------------------------------------------------------------------------------
class H11Parser(_Framer):
    """The pure-Python path: one h11 connection per request (corral splits the pipeline)."""

    __slots__ = ("_conn", "_done", "_h11")

    def __init__(self, sink: ParserSink, limits: ParserLimits) -> None:
        import h11

        super().__init__(sink, limits)
        self._h11 = h11
        self._conn: Any = None
        self._done = False

    def _parse_head(self, head: bytes) -> RequestHead:
        h11 = self._h11
        method, target, version, fields = scan_head(head, self._limits)
        request = interpret(method, target, version, fields, self._limits, None)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self._limits.head_size)
        conn.receive_data(head)
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise ParseError(400, f"rejected by h11: {exc}") from exc
        # h11 lower-cases some values (Transfer-Encoding, ...); compare case-insensitively.
        if type(event) is not h11.Request or [(n, v.lower()) for n, v in event.headers] != [
            (n, v.lower()) for n, v in fields
        ]:
            raise ParseError(400, "h11 disagrees with the pre-scan")
        self._conn = conn
        self._done = False
        if not request.chunked and not request.content_length:
            self._drain_events()
        return request

    def _drain_events(self) -> None:
        h11 = self._h11
        sink = self._sink
        while True:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise ParseError(400, f"rejected by h11: {exc}") from exc
            kind = type(event)
            if kind is h11.Data:
                sink.on_body(bytes(event.data))
            elif kind is h11.EndOfMessage:
                self._done = True
                return
            else:  # NEED_DATA, or PAUSED after an upgrade request
                return

    def _feed_body(self, data: bytes | memoryview) -> None:
        self._conn.receive_data(data)
        self._drain_events()

    def _finish_message(self) -> None:
        if not self._done:
            raise ParseError(400, "h11 disagrees on message framing")
        self._conn = None


def make_parser(kind: str, sink: ParserSink, limits: ParserLimits) -> RequestParser:
    """A parser of ``kind`` ("httptools" or "h11") feeding ``sink``."""
    if kind == "httptools":
        return HttptoolsParser(sink, limits)
    if kind == "h11":
        return H11Parser(sink, limits)
    raise ValueError(f"unknown parser {kind!r}")
