"""Chunked request bodies (RFC 9112 §7.1): decoded, checked, and where they end.

:class:`ChunkScanner` walks the chunked framing of a request body, hands out the chunk data,
checks the body limit against declared chunk sizes before their data arrives, and finds
where one chunked body ends and the next pipelined request begins.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable

from corral.grammar import TCHAR
from corral.worker.http1.prescan import FIELD_BLOCK, ParseError, ParserLimits

_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_BWS = rb"[ \t]*"
#: chunk-size [chunk-ext] (RFC 9112 §7.1.1), with the optional whitespace the RFC allows
#: around ';' and '=' (llhttp refuses it; corral frames chunked bodies itself).
_CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]+)(?:" + _BWS + rb";" + _BWS + rb"[" + TCHAR + rb"]+"
    rb"(?:" + _BWS + rb"=" + _BWS + rb"(?:[" + TCHAR + rb"]+|" + _QUOTED + rb"))?)*"
)

#: Longest chunk-size line (with extensions) accepted; extensions carry nothing corral uses.
MAX_CHUNK_LINE = 4096
#: A chunk size needs at most 15 significant hex digits (< 2**60); more is an overflow
#: attempt (llhttp overflows at 2**64, h11 at 20 digits; corral draws the line lower).
#: Leading zeros are not significant (``1*HEXDIG``): ``000...05`` is a 5-byte chunk,
#: bounded only by the size line's length.
_MAX_CHUNK_DIGITS = 15


class _Part(enum.Enum):
    """Which part of the chunked framing comes next."""

    SIZE = "size"  # a chunk-size line
    DATA = "data"  # chunk data
    DATA_END = "data-end"  # the CRLF after chunk data
    TRAILER = "trailer"  # trailer field lines, up to the empty line


class ChunkScanner:
    """Walks chunked framing (RFC 9112 §7.1) to find where a chunked body ends.

    ``scan(buf, pos, emit)`` calls ``emit`` with each piece of chunk data, and returns the
    offset up to which bytes belong to the body and have been validated; ``done`` turns
    True after the last chunk and the trailer section.
    Chunk sizes are summed against the body limit before their data arrives.
    """

    __slots__ = (
        "_limits",
        "_remaining",
        "_state",
        "_trailer_bytes",
        "_trailer_fields",
        "body",
        "done",
    )

    def __init__(self, limits: ParserLimits) -> None:
        self._limits = limits
        self._state = _Part.SIZE
        self._remaining = 0
        self._trailer_bytes = 0
        self._trailer_fields = 0
        self.body = 0
        self.done = False

    def scan(self, buf: bytes | bytearray, pos: int, emit: Callable[[bytes], None]) -> int:
        limits = self._limits
        end = len(buf)
        while pos < end and not self.done:
            state = self._state
            if state is _Part.DATA:
                take = min(self._remaining, end - pos)
                emit(bytes(buf[pos : pos + take]))
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = _Part.DATA_END
            elif state is _Part.DATA_END:
                if end - pos < 2:
                    if buf[pos] != 0x0D:
                        raise ParseError(400, "chunk data not followed by CRLF")
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise ParseError(400, "chunk data not followed by CRLF")
                pos += 2
                self._state = _Part.SIZE
            else:
                line_end = buf.find(b"\r\n", pos)
                if line_end < 0:
                    self._check_partial_line(buf, pos, end, limits)
                    break
                if state is _Part.SIZE:
                    self._size_line(buf, pos, line_end, limits)
                else:
                    self._trailer_line(buf, pos, line_end, limits)
                pos = line_end + 2
        return pos

    def _check_partial_line(
        self, buf: bytes | bytearray, pos: int, end: int, limits: ParserLimits
    ) -> None:
        if buf.find(b"\n", pos, end) >= 0:
            raise ParseError(400, "bare LF in chunked framing")
        if self._state is _Part.SIZE:
            if end - pos > MAX_CHUNK_LINE:
                raise ParseError(400, "chunk size line too long")
        elif end - pos > limits.field_size:
            raise ParseError(431, "trailer field too large")
        elif self._trailer_bytes + end - pos > limits.head_size:
            raise ParseError(431, "trailer section too large")

    def _size_line(
        self, buf: bytes | bytearray, pos: int, line_end: int, limits: ParserLimits
    ) -> None:
        if line_end - pos > MAX_CHUNK_LINE:
            raise ParseError(400, "chunk size line too long")
        match = _CHUNK_LINE.fullmatch(buf, pos, line_end)
        if match is None:
            raise ParseError(400, "invalid chunk size")
        digits = match[1].lstrip(b"0")
        if len(digits) > _MAX_CHUNK_DIGITS:
            raise ParseError(400, "chunk size overflow")
        size = int(digits, 16) if digits else 0
        self.body += size
        if limits.body and self.body > limits.body:
            raise ParseError(413, "request body too large")
        if size:
            self._remaining = size
            self._state = _Part.DATA
        else:
            self._state = _Part.TRAILER

    def _trailer_line(
        self, buf: bytes | bytearray, pos: int, line_end: int, limits: ParserLimits
    ) -> None:
        if line_end == pos:
            self.done = True
            return
        self._trailer_fields += 1
        self._trailer_bytes += line_end - pos + 2
        if self._trailer_fields > limits.fields or self._trailer_bytes > limits.head_size:
            raise ParseError(431, "trailer section too large")
        if line_end - pos > limits.field_size:
            raise ParseError(431, "trailer field too large")
        if FIELD_BLOCK.fullmatch(buf, pos, line_end + 2) is None:
            raise ParseError(400, "invalid trailer field")
        # Framing fields after the body are a smuggling attempt (RFC 9110 §6.5.1).
        name = bytes(buf[pos : buf.find(b":", pos)]).lower()
        if name == b"content-length" or name == b"transfer-encoding":
            raise ParseError(400, "framing field in trailers")
