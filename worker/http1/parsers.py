"""The request reader: bytes in, request heads, body data and message ends out (sans-I/O).

:class:`RequestReader` owns the byte buffer, finds each request head, parses it with
corral's strict scanner (:mod:`corral.worker.http1.prescan`), and frames the body itself
(Content-Length, or chunked through :class:`~corral.worker.http1.chunked.ChunkScanner`).
It is the one parser of every head at run time, whatever ``--http`` says: httptools (llhttp)
and h11 are the independent oracles its differential fuzz tests compare it with.

The connection protocol implements :class:`ParserSink`:

    reader = RequestReader(sink, ParserLimits.from_config(config))
    reader.feed(data)          # calls sink.on_head / on_body / on_message_complete
"""

from __future__ import annotations

import enum
from typing import Protocol

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
    "RequestReader",
]


class ParserSink(Protocol):
    """What a parser calls; implemented by the HTTP/1.1 connection protocol."""

    def on_head(self, head: RequestHead) -> bool:
        """A request head arrived. Return True to halt parsing (upgrade hand-off)."""
        ...

    def on_body(self, data: bytes) -> None: ...

    def on_message_complete(self) -> bool | None:
        """A request ended. Return True when the connection reads no further request."""
        ...


class _State(enum.Enum):
    HEAD = "head"  # waiting for (the rest of) a request head
    BODY_LENGTH = "body-length"  # reading a Content-Length body
    BODY_CHUNKED = "body-chunked"  # reading a chunked body
    HALTED = "halted"  # the sink took over the connection; bytes are kept for it
    CLOSED = "closed"  # a request without keep-alive finished; nothing more is parsed
    FAILED = "failed"  # a ParseError was raised; nothing more is parsed


_EMPTY = b""


class RequestReader:
    """Buffering, head detection and parsing, and request body framing."""

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

    def unconsumed(self) -> bytes:
        """The bytes after the head on which the sink halted parsing."""
        return bytes(self._buf) if self._state is _State.HALTED else _EMPTY

    def feed(self, data: bytes) -> None:
        """Parse ``data``, calling the sink; raises :class:`ParseError` on a bad request."""
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
                method, target, version, fields = scan_head(head, limits)
                request = interpret(method, target, version, fields, limits)
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
                    sink.on_body(buf)  # the whole read is body: handed on without a copy
                else:
                    sink.on_body(bytes(buf[pos : pos + take]))
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
                pos = chunks.scan(buf, pos, sink.on_body)
                if not chunks.done:
                    return pos
                if not self._complete():
                    return end
            else:
                return pos
        return pos

    def _complete(self) -> bool:
        """End the current message; False when the connection takes no more requests."""
        self._chunks = None
        if not self._sink.on_message_complete() and self._keep_alive:
            self._state = _State.HEAD
            return True
        self._state = _State.CLOSED
        return False
