"""Response framing, with no I/O: status lines, header checks, and body framing.

:class:`ResponseFramer` turns an app's ``http.response.start`` headers into the bytes of the
response head and then frames each body chunk (Content-Length, chunked, or close-delimited),
so every framing rule is testable without a socket:

- an app header name that is not a token, or a value with CR, LF or NUL, is refused
  (:class:`InvalidResponseHeader`) so nothing can be injected on the wire;
- HEAD, 1xx, 204 and 304 responses never carry a body;
- HTTP/1.0 is never sent chunked: without a length the response is close-delimited;
- a body longer than its Content-Length is cut, a shorter one is flagged; either way the
  caller closes the connection afterwards.
"""

from __future__ import annotations

from enum import Enum
from http import HTTPStatus
from typing import Any, NamedTuple, Protocol

from corral.grammar import TOKEN


class InvalidResponseHeader(ValueError):
    """The app's response headers can't be sent safely."""


class BodyMode(Enum):
    NONE = "none"  # no body may follow (1xx, 204, 304); one the app sends is dropped
    HEAD = "head"  # answering HEAD: no body follows, and the app's is discarded silently
    LENGTH = "length"  # exactly Content-Length bytes
    CHUNKED = "chunked"  # Transfer-Encoding: chunked
    CLOSE = "close"  # delimited by closing the connection (HTTP/1.0 without a length)


class HeaderDefaults(Protocol):
    """The per-process default headers (see :class:`corral.worker.state.ServerState`)."""

    header_block: bytes
    default_names: frozenset[bytes]
    #: Two dicts (HTTP/1.1, HTTP/1.0) remembering checked app header sets.
    header_cache: tuple[dict[Any, Any], dict[Any, Any]]

    def header_block_without(self, exclude: set[bytes]) -> bytes: ...


_STATUS_LINES: dict[int, bytes] = {}
_STATUS_TEXT: dict[int, str] = {}


def status_text(status: int) -> str:
    """``"200 OK"``: the status with its reason phrase, as the access log shows it."""
    text = _STATUS_TEXT.get(status)
    if text is None:
        try:
            text = f"{status} {HTTPStatus(status).phrase}"
        except ValueError:
            text = str(status)
        _STATUS_TEXT[status] = text
    return text


def status_line(status: int) -> bytes:
    """The cached ``HTTP/1.1 <status> <phrase>\\r\\n`` line."""
    line = _STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 " + status_text(status).encode("ascii") + b"\r\n"
        if len(_STATUS_LINES) < 1000:  # statuses are 3 digits; the bound is a formality
            _STATUS_LINES[status] = line
    return line


_CONTENT_LENGTH, _TRANSFER_ENCODING, _CONNECTION = 1, 2, 3
_SPECIAL = {
    b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"connection": _CONNECTION,
}


#: Distinct app header sets whose checks are remembered per process. Apps send the same few
#: header sets over and over; the bound keeps a stream of unique values from growing it.
HEADER_CACHE_SIZE = 256

#: (block, content length or -1, app chunked, app said close, app sent Connection, names
#: of default headers the app overrides) for one app header set.
HeaderInfo = tuple[bytes, int, bool, bool, bool, frozenset[bytes] | None]


def _analyse(
    headers: tuple[tuple[bytes, bytes], ...], names: frozenset[bytes], http10: bool
) -> HeaderInfo:
    """Check an app's headers and encode them (raises on anything unsafe)."""
    length = -1
    app_chunked = close_by_app = has_connection = False
    overridden: set[bytes] | None = None
    lines = []
    for pair in headers:
        try:
            name, value = pair
        except (TypeError, ValueError):
            raise InvalidResponseHeader(f"a header is not a (name, value) pair: {pair!r}") from None
        if not isinstance(name, bytes) or not isinstance(value, bytes):
            raise InvalidResponseHeader(
                f"header names and values must be bytes; header {name!r} has a"
                f" {type(name).__name__} name and a {type(value).__name__} value"
            )
        if TOKEN.fullmatch(name) is None:  # a space or colon would split the header
            raise InvalidResponseHeader(f"invalid header name {name!r}")
        lname = name.lower()
        kind = _SPECIAL.get(lname)
        if kind is not None:
            if kind == _CONTENT_LENGTH:
                if length >= 0 or not value.isdigit():
                    raise InvalidResponseHeader(f"bad or repeated Content-Length {value!r}")
                length = int(value)
            elif kind == _TRANSFER_ENCODING:
                app_chunked = b"chunked" in value.lower()
                if http10:
                    continue  # HTTP/1.0 has no transfer codings
            else:
                has_connection = True
                close_by_app = close_by_app or b"close" in value.lower()
        elif lname in names:
            if overridden is None:
                overridden = set()
            overridden.add(lname)
        lines.append(b"%s: %s\r\n" % (name, value))
    block = b"".join(lines)
    # Each line ends in exactly one CRLF; any other CR, LF or NUL came from the app.
    if block.count(b"\n") != len(lines) or block.count(b"\r") != len(lines) or b"\0" in block:
        raise InvalidResponseHeader("CR, LF or NUL in a response header")
    if app_chunked and length >= 0:
        raise InvalidResponseHeader("both Content-Length and Transfer-Encoding")
    frozen = None if overridden is None else frozenset(overridden)
    return block, length, app_chunked, close_by_app, has_connection, frozen


class HeadFraming(NamedTuple):
    """What the request decided about the response head :meth:`ResponseFramer.head` builds."""

    no_body: bool  # a HEAD request: the body is discarded without comment
    http10: bool  # the request was HTTP/1.0: never chunked
    keep_alive: bool  # the connection may be kept (the app's headers may still close it)

    @staticmethod
    def of(no_body: bool, http10: bool, keep_alive: bool) -> HeadFraming:
        """One of 8 shared tuples: nothing is built per response."""
        return _FRAMINGS[no_body * 4 + http10 * 2 + keep_alive]


_FRAMINGS = [HeadFraming(bool(i & 4), bool(i & 2), bool(i & 1)) for i in range(8)]


class ResponseFramer:
    """Builds one response head and frames its body; records what went wrong."""

    __slots__ = ("dropped", "keep_alive", "mode", "overflow", "remaining", "short")

    def __init__(self) -> None:
        self.mode = BodyMode.NONE
        self.remaining = 0
        self.keep_alive = True
        self.dropped = False  # the app sent body bytes where the status allows none
        self.overflow = False  # more bytes than Content-Length (cut)
        self.short = False  # fewer bytes than Content-Length

    def head(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes], ...],
        defaults: HeaderDefaults,
        framing: HeadFraming,
        body_len: int | None,
    ) -> bytes:
        """The response head bytes; sets :attr:`mode` and :attr:`keep_alive`.

        ``framing.no_body`` is True for HEAD requests, whose body is discarded without comment
        (apps commonly answer HEAD as GET and leave the stripping to the server); 1xx, 204
        and 304 are detected here, and a body sent with one of those sets :attr:`dropped`.
        ``body_len`` is the whole body's length when the app's first body message was also
        its last, so a Content-Length can be sent instead of chunking.
        Raises :class:`InvalidResponseHeader`, and only that, for anything wrong in the
        app's status or headers.
        """
        if not isinstance(status, int) or not 100 <= status <= 999:
            raise InvalidResponseHeader(f"invalid status {status!r}")
        no_body, http10, keep_alive = framing
        head_request = no_body
        no_body = no_body or status < 200 or status == 204 or status == 304
        try:
            items = tuple(headers)
        except TypeError:
            raise InvalidResponseHeader(f"headers must be a list of pairs: {headers!r}") from None
        cache = defaults.header_cache[http10]
        try:
            info = cache.get(items)
        except TypeError:  # unhashable pairs (lists): check them without caching
            info = _analyse(items, defaults.default_names, http10)
        else:
            if info is None:
                info = _analyse(items, defaults.default_names, http10)
                if len(cache) >= HEADER_CACHE_SIZE:
                    cache.clear()
                cache[items] = info
        block, length, app_chunked, close_by_app, has_connection, overridden = info

        keep_alive = keep_alive and not close_by_app
        if length >= 0 and body_len is not None and body_len != length and not no_body:
            keep_alive = False  # the whole body is known not to match: say so up front
        extra = b""
        if no_body:
            mode = BodyMode.HEAD if head_request else BodyMode.NONE
        elif length >= 0:
            mode = BodyMode.LENGTH
        elif app_chunked and not http10:
            mode = BodyMode.CHUNKED
        elif body_len is not None:
            mode, length = BodyMode.LENGTH, body_len
            extra = b"content-length: %d\r\n" % body_len
        elif http10:
            mode, keep_alive = BodyMode.CLOSE, False
        else:
            mode = BodyMode.CHUNKED
            extra = b"transfer-encoding: chunked\r\n"
        if not keep_alive:
            if not close_by_app:
                extra += b"connection: close\r\n"
        elif http10 and not has_connection:
            extra += b"connection: keep-alive\r\n"
        self.mode, self.remaining, self.keep_alive = mode, max(length, 0), keep_alive
        default_block = (
            defaults.header_block
            if overridden is None
            else defaults.header_block_without(set(overridden))
        )
        return status_line(status) + default_block + block + extra + b"\r\n"

    def frame(self, data: bytes, more: bool) -> bytes:
        """The wire bytes for one body message (``more`` False for the last one)."""
        mode = self.mode
        if mode is BodyMode.LENGTH:
            size = len(data)
            if size > self.remaining:
                self.overflow = True
                data = data[: self.remaining]
                size = self.remaining
            self.remaining -= size
            if not more and self.remaining:
                self.short = True
            return data
        if mode is BodyMode.CHUNKED:
            if data:
                if more:
                    return b"%x\r\n%b\r\n" % (len(data), data)
                return b"%x\r\n%b\r\n0\r\n\r\n" % (len(data), data)
            return b"" if more else b"0\r\n\r\n"
        if mode is BodyMode.CLOSE:
            return data
        if data and mode is BodyMode.NONE:
            self.dropped = True
        return b""


def simple_response(
    status: int, defaults: HeaderDefaults, body: bytes | None = None, *, close: bool = True
) -> bytes:
    """A complete plain-text response corral sends on its own (errors, health checks)."""
    if body is None:
        body = HTTPStatus(status).phrase.encode("ascii") if status != 408 else b"Request Timeout"
    return b"".join(
        (
            status_line(status),
            defaults.header_block,
            b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n" if close else b"\r\n",
            body,
        )
    )
