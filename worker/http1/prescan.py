"""corral's request-head parser: one strict scan of the raw head, then its interpretation.

httptools (llhttp) and h11 each accept things RFC 9112 forbids and reject things it allows,
and they disagree with each other. So corral parses heads itself, once, with precompiled
regexes (one C-level pass per check, no per-byte Python loop), and interprets the header
fields here too. The result is the head the app sees, whatever ``--http`` says; the
libraries serve as oracles in the differential fuzz tests.

Chunked framing is checked by :class:`corral.worker.http1.chunked.ChunkScanner`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from corral.grammar import TCHAR, TOKEN

if TYPE_CHECKING:
    from corral.config import Config


class ParseError(Exception):
    """A request the server must refuse. The connection always closes after the answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ParserLimits:
    """Size limits on a request (bytes; ``body`` 0 = unlimited)."""

    request_line: int = 16384
    fields: int = 200
    field_size: int = 32768
    head_size: int = 65536
    body: int = 0

    @classmethod
    def from_config(cls, config: Config) -> ParserLimits:
        return cls(
            request_line=config.limit_request_line,
            fields=config.limit_request_fields,
            field_size=config.limit_request_field_size,
            head_size=config.head_size_limit,
            body=config.limit_request_body,
        )


@dataclass(slots=True)
class RequestHead:
    """A validated request head, as both adapters hand it to the connection protocol."""

    method: str
    raw_path: bytes
    query_string: bytes
    http_version: str
    headers: list[tuple[bytes, bytes]]
    keep_alive: bool
    expect_continue: bool
    upgrade: bytes | None
    content_length: int | None
    chunked: bool


# --- grammar (tokens: corral.grammar; RFC 9110 §5.5 values; RFC 9112 §3, §5, §7.1) ---
#: request-line: token SP target SP HTTP-version. Targets are visible ASCII only (RFC 3986);
#: raw UTF-8 in a target is refused, as h11 and llhttp both do.
#: A "#" (fragment) never belongs in a request target (RFC 9112 §3.2), so it is refused too.
_REQUEST_LINE = re.compile(rb"([" + TCHAR + rb"]+) ([\x21\x22\x24-\x7e]+) HTTP/([0-9])\.([0-9])")
_VERSION_ONLY = re.compile(rb".* HTTP/[0-9]\.[0-9]", re.S)
#: Field lines: no whitespace before the colon, no obs-fold (a line may not start with
#: whitespace), no CTL but HTAB in a value (NUL, CR, LF and DEL included), CRLF endings.
FIELD_BLOCK = re.compile(rb"(?:[" + TCHAR + rb"]+:[\t\x20-\x7e\x80-\xff]*\r\n)*")
#: One field line, anchored at a line start, its value trimmed by the pattern itself. The
#: value's parts (visible runs and whitespace runs) use disjoint classes, so matching is
#: linear: no backtracking blow-up on long whitespace runs.
_FIELD = re.compile(
    rb"^([" + TCHAR + rb"]+):[ \t]*"
    rb"((?:[\x21-\x7e\x80-\xff]+(?:[ \t]+[\x21-\x7e\x80-\xff]+)*)?)[ \t]*\r\n",
    re.M,
)
_BARE_LF = re.compile(rb"(?<!\r)\n")
#: A CR followed by anything but LF (a bare CR line ending, RFC 9112 §2.2).
_BARE_CR = re.compile(rb"\r[^\n]")
#: The method so far: a partial head whose first non-token byte is not the space after the
#: method can never become a request (binary junk, or TLS sent to a plain-HTTP port).
_METHOD_SO_FAR = re.compile(rb"[" + TCHAR + rb"]*")
#: A TLS record header for a handshake (ContentType 22, then major version 3).
_TLS_HANDSHAKE = b"\x16\x03"
_DIGITS = re.compile(rb"[0-9]{1,18}")
#: Host = uri-host [":" port] (RFC 9110 §7.2, RFC 3986 §3.2.2); empty is allowed.
_HOST = re.compile(
    rb"(?:\[[0-9A-Za-z:.%~\-_!$&'()*+,;=]+\]|[0-9A-Za-z\-._~!$&'()*+,;=%]*)(?::[0-9]*)?"
)
#: absolute-form for the http and https schemes only: corral is an origin server.
_ABSOLUTE = re.compile(rb"(?i:https?)://([^/?]+)([^?]*)(?:\?(.*))?", re.S)
_METHOD_NAMES: dict[bytes, str] = {}
_VERSIONS = {(b"1", b"1"): "1.1", (b"1", b"0"): "1.0"}
#: Transfer codings corral decodes. Others (gzip, compress, ...) are not decoded, so a
#: request using them gets 501 (RFC 9112 §6.1).
_CHUNKED = b"chunked"


_HOST_FIELD, _LENGTH_FIELD, _CODING_FIELD, _CONNECTION_FIELD, _EXPECT_FIELD = range(5)
_UPGRADE_FIELD = 5
#: The fields that decide framing and connection handling (one dict lookup per field).
_SPECIAL = {
    b"host": _HOST_FIELD,
    b"content-length": _LENGTH_FIELD,
    b"transfer-encoding": _CODING_FIELD,
    b"connection": _CONNECTION_FIELD,
    b"expect": _EXPECT_FIELD,
    b"upgrade": _UPGRADE_FIELD,
}


def method_name(raw: bytes) -> str:
    """The method as str, decoded once per distinct method."""
    name = _METHOD_NAMES.get(raw)
    if name is None:
        name = raw.decode("ascii")
        if len(_METHOD_NAMES) < 64:
            _METHOD_NAMES[raw] = name
    return name


def check_partial_head(
    buf: bytes | bytearray, start: int, scan_from: int, limits: ParserLimits
) -> None:
    """Refuse an unfinished head early: too long, a bare LF or CR already seen, or a first
    line that cannot start a request, so junk gets its 400 now instead of a 408 later."""
    size = len(buf) - start
    if size > limits.head_size:
        raise ParseError(431, "request head too large")
    line_limit = limits.request_line + 2
    if size > line_limit and buf.find(b"\r\n", start, start + line_limit) < 0:
        raise ParseError(414, "request line too long")
    if buf.startswith(_TLS_HANDSHAKE, start):
        raise ParseError(400, "TLS handshake on a plain-HTTP port")
    if (
        _BARE_LF.search(buf, max(start + 1, scan_from)) is not None
        or buf[start : start + 1] == b"\n"
    ):
        raise ParseError(400, "bare LF line ending")
    if _BARE_CR.search(buf, max(start, scan_from - 1)) is not None:
        raise ParseError(400, "bare CR line ending")
    so_far = _METHOD_SO_FAR.match(buf, start)  # always matches, maybe empty
    method_end = so_far.end() if so_far is not None else start
    if method_end < len(buf) and buf[method_end] != 0x20 and buf[start] != 0x0D:
        raise ParseError(400, "invalid method")


def scan_head(
    head: bytes, limits: ParserLimits
) -> tuple[bytes, bytes, str, list[tuple[bytes, bytes]]]:
    """Validate ``head`` (request line through the blank line) and split it.

    Returns (method, target, http_version, fields) with lower-cased names and trimmed
    values. Raises :class:`ParseError` with 400, 414, 431 or 505.
    """
    if len(head) > limits.head_size:
        raise ParseError(431, "request head too large")
    line_end = head.find(b"\r\n")
    if line_end > limits.request_line:
        raise ParseError(414, "request line too long")
    match = _REQUEST_LINE.fullmatch(head, 0, line_end)
    if match is None:
        raise ParseError(400, _request_line_problem(head[:line_end]))
    version = _VERSIONS.get((match[3], match[4]))
    if version is None:
        raise ParseError(505, "HTTP version not supported")
    block_start = line_end + 2
    block_end = len(head) - 2  # the blank line
    lines = head.count(b"\r\n", block_start, block_end)
    if lines > limits.fields:
        raise ParseError(431, "too many header fields")
    if block_end - block_start > limits.field_size:
        longest = max(len(line) for line in head[block_start:block_end].split(b"\r\n"))
        if longest > limits.field_size:
            raise ParseError(431, "header field too large")
    found = _FIELD.findall(head, block_start, block_end)
    # Every line matched, and no LF hides inside one: the block is exactly N valid lines.
    if len(found) != lines or head.count(b"\n", block_start, block_end) != lines:
        raise ParseError(400, _field_problem(head[block_start:block_end]))
    return match[1], match[2], version, [(name.lower(), value) for name, value in found]


def _request_line_problem(line: bytes) -> str:
    """Why a request line failed the grammar (error path only)."""
    if line.startswith(_TLS_HANDSHAKE):
        return "TLS handshake on a plain-HTTP port"
    if b"\x00" in line or b"\r" in line:
        return "NUL or CR in request line"
    parts = line.split(b" ")
    if len(parts) != 3:
        return "malformed request line"
    if not TOKEN.fullmatch(parts[0]):
        return "invalid method"
    if not re.fullmatch(rb"[\x21\x22\x24-\x7e]+", parts[1]):
        return "invalid request target"
    if _VERSION_ONLY.fullmatch(line) is None:
        return "malformed HTTP version"
    return "malformed request line"


def _field_problem(block: bytes) -> str:
    """Why the field lines failed the grammar (error path only)."""
    for line in block.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            return "obs-fold in header"
        name, colon, value = line.partition(b":")
        if not colon:
            return "header line without colon"
        if not name:
            return "empty header name"
        if name[-1:] in (b" ", b"\t"):
            return "whitespace before colon"
        if TOKEN.fullmatch(name) is None:
            return "invalid header name"
        if b"\x00" in value or b"\r" in value:
            return "NUL or CR in header value"
    return "invalid header value"


def interpret(
    method: bytes,
    target: bytes,
    version: str,
    fields: list[tuple[bytes, bytes]],
    limits: ParserLimits,
) -> RequestHead:
    """Apply the semantic rules (Host, framing, connection) and build the head.

    ``fields`` have lower-cased names and trimmed values. Any token is a method: one corral
    does not know reaches the app, which answers it (405 or 501) as it sees fit. Raises
    :class:`ParseError`.
    """
    host: bytes | None = None
    hosts = 0
    content_length: bytes | None = None
    lengths = 0
    codings: list[bytes] | None = None
    connection = b""
    expect = b""
    upgrade = b""
    special = _SPECIAL.get
    for name, value in fields:
        kind = special(name)
        if kind is None:
            continue
        if kind == _HOST_FIELD:
            host = value
            hosts += 1
        elif kind == _LENGTH_FIELD:
            content_length = value
            lengths += 1
        elif kind == _CODING_FIELD:
            if codings is None:
                codings = []
            codings.extend(value.split(b","))
        elif kind == _CONNECTION_FIELD:
            connection = connection + b"," + value if connection else value
        elif kind == _EXPECT_FIELD:
            expect = value
        else:
            upgrade = value
    if hosts > 1:
        raise ParseError(400, "more than one Host")
    if host is None:
        if version == "1.1":
            raise ParseError(400, "missing Host")
    elif _HOST.fullmatch(host) is None:
        raise ParseError(400, "invalid Host")

    length: int | None = None
    if lengths:
        if lengths > 1:
            raise ParseError(400, "more than one Content-Length")
        if content_length is None or _DIGITS.fullmatch(content_length) is None:
            raise ParseError(400, "invalid Content-Length")
        length = int(content_length)
    chunked = False
    if codings is not None:
        if lengths:
            raise ParseError(400, "both Content-Length and Transfer-Encoding")
        if version == "1.0":
            raise ParseError(400, "Transfer-Encoding in HTTP/1.0")
        chunked = _check_codings(codings)
    if length is not None and limits.body and length > limits.body:
        raise ParseError(413, "request body too large")

    tokens = connection.lower() if connection else b""
    if version == "1.1":
        keep_alive = not (tokens and _has_token(tokens, b"close"))
    else:
        keep_alive = bool(tokens) and _has_token(tokens, b"keep-alive")
        keep_alive = keep_alive and not _has_token(tokens, b"close")
    upgrade_token = None
    if upgrade and tokens and _has_token(tokens, b"upgrade"):
        upgrade_token = upgrade.lower()

    if method == b"CONNECT":
        raise ParseError(501, "CONNECT not implemented")
    if target[0] == 0x2F:  # "/": origin-form, the common case
        path, _sep, query = target.partition(b"?")
    elif target == b"*":
        if method != b"OPTIONS":
            raise ParseError(400, "asterisk-form target outside OPTIONS")
        path, query = target, b""
    else:
        absolute = _ABSOLUTE.fullmatch(target)
        if absolute is None:
            raise ParseError(400, "invalid request target")
        authority = absolute[1]
        if _HOST.fullmatch(authority) is None or b"@" in authority:
            raise ParseError(400, "invalid authority in request target")
        path = absolute[2] or b"/"
        query = absolute[3] or b""
        # RFC 9112 §3.2.2: the target's authority replaces the Host field.
        fields = [(n, authority if n == b"host" else v) for n, v in fields]
        if host is None:
            fields.append((b"host", authority))
    return RequestHead(
        method_name(method),
        path,
        query,
        version,
        fields,
        keep_alive,
        version == "1.1" and expect.lower() == b"100-continue",
        upgrade_token,
        length,
        chunked,
    )


def _has_token(tokens: bytes, token: bytes) -> bool:
    if tokens == token:
        return True
    return token in (part.strip(b" \t") for part in tokens.split(b","))


def _check_codings(codings: list[bytes]) -> bool:
    """Validate a Transfer-Encoding list; True when the body is chunked (always, if valid).

    Empty list elements (``, chunked``) are refused, although RFC 9110 §5.6.1 lets a
    recipient skip them: no real client sends one, and a front proxy that reads such a
    value as "not chunked" would frame the body differently from corral (smuggling).
    """
    names = [c.strip(b" \t").lower() for c in codings]
    if b"" in names:
        raise ParseError(400, "empty element in Transfer-Encoding")
    if names[-1] != _CHUNKED:
        raise ParseError(400, "final transfer coding is not chunked")
    if names.count(_CHUNKED) > 1:
        raise ParseError(400, "chunked applied more than once")
    if len(names) > 1:
        raise ParseError(501, "transfer coding not implemented")
    return True
