"""PROXY protocol (HAProxy) v1 and v2 header parsing, sans-I/O.

A load balancer speaking the PROXY protocol sends one header at the very start of each
connection naming the original client. :func:`parse` looks at the bytes received so far and
says whether more are needed, what the header says and how many bytes it used, or why the
connection must be dropped. The version is detected per connection from the first bytes.

Reference: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

Address = tuple[str, int]

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
#: The v1 specification's worst case ("PROXY UNKNOWN" plus two IPv6 addresses and ports).
V1_MAX_LENGTH = 107
_V2_FIXED = 16
#: Cap on a v2 header's variable part. Real senders (HAProxy, AWS, GCP) add well under 1 KiB
#: of TLVs; the cap bounds what one unauthenticated connection can make us buffer.
V2_MAX_PAYLOAD = 16384

_CMD_LOCAL = 0x0
_CMD_PROXY = 0x1
_FAM_UNSPEC = 0x00
_FAM_TCP4 = 0x11
_FAM_TCP6 = 0x21
_FAM_UNIX_STREAM = 0x31
# Minimum address-block sizes: two addresses plus two ports (unix: two 108-byte paths).
_ADDRESS_BLOCK = {_FAM_TCP4: 12, _FAM_TCP6: 36, _FAM_UNIX_STREAM: 216}
_TLV_HEADER = 3


@dataclass(frozen=True, slots=True)
class NeedMore:
    """The header is incomplete; call again with more bytes."""


@dataclass(frozen=True, slots=True)
class Parsed:
    """A valid header of ``consumed`` bytes.

    ``is_local`` means the header carries no usable client (v2 LOCAL, v2 UNSPEC, v1 UNKNOWN):
    keep the real peer address. Otherwise ``source`` is the original client, or None when
    it connected over a Unix socket.
    """

    source: Address | None
    dest: Address | None
    is_local: bool
    consumed: int
    version: int


@dataclass(frozen=True, slots=True)
class Invalid:
    """Not a valid PROXY header; the connection must be closed."""

    reason: str


Result = NeedMore | Parsed | Invalid
NEED_MORE = NeedMore()


def parse(data: bytes | bytearray) -> Result:
    """Parse a PROXY header from the start of ``data``."""
    if data[:12] == V2_SIGNATURE:
        return _parse_v2(data)
    if data[:6] == V1_PREFIX:
        return _parse_v1(data)
    head = bytes(data[:12])
    if V2_SIGNATURE.startswith(head) or (len(head) < 6 and V1_PREFIX.startswith(head)):
        return NEED_MORE
    return Invalid("no PROXY protocol header")


def _parse_v1(data: bytes | bytearray) -> Result:
    end = data.find(b"\r\n", 0, V1_MAX_LENGTH)
    if end < 0:
        if len(data) >= V1_MAX_LENGTH or b"\n" in data:
            return Invalid("PROXY v1 header not terminated by CRLF within 107 bytes")
        return NEED_MORE
    try:
        line = bytes(data[:end]).decode("ascii")
    except UnicodeDecodeError:
        return Invalid("PROXY v1 header is not ASCII")
    parts = line.split(" ")
    consumed = end + 2
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        # The sender could not tell; whatever follows must be ignored (spec section 2.1).
        return Parsed(None, None, True, consumed, 1)
    if len(parts) != 6:
        return Invalid("PROXY v1 header does not have 6 fields")
    _, proto, src, dst, sport, dport = parts
    if proto == "TCP4":
        kind: type[ipaddress.IPv4Address | ipaddress.IPv6Address] = ipaddress.IPv4Address
    elif proto == "TCP6":
        kind = ipaddress.IPv6Address
    else:
        return Invalid(f"PROXY v1 protocol {proto[:16]!r} is not TCP4, TCP6 or UNKNOWN")
    try:
        kind(src)
        kind(dst)
    except ValueError:
        return Invalid(f"PROXY v1 addresses are not {proto}")
    source_port, dest_port = _v1_port(sport), _v1_port(dport)
    if source_port is None or dest_port is None:
        return Invalid("PROXY v1 port is not a number from 0 to 65535")
    return Parsed((src, source_port), (dst, dest_port), False, consumed, 1)


def _v1_port(text: str) -> int | None:
    if not (text.isascii() and text.isdigit()) or len(text) > 5:
        return None
    if len(text) > 1 and text[0] == "0":
        return None  # the spec forbids leading zeros
    port = int(text)
    return port if port <= 65535 else None


def _parse_v2(data: bytes | bytearray) -> Result:
    if len(data) < _V2_FIXED:
        return NEED_MORE
    ver_cmd, family, length = struct.unpack_from("!BBH", data, 12)
    if ver_cmd >> 4 != 2:
        return Invalid(f"PROXY v2 header has version {ver_cmd >> 4}")
    command = ver_cmd & 0x0F
    if command not in (_CMD_LOCAL, _CMD_PROXY):
        return Invalid(f"PROXY v2 command {command} is neither LOCAL nor PROXY")
    if length > V2_MAX_PAYLOAD:
        return Invalid(f"PROXY v2 header length {length} exceeds {V2_MAX_PAYLOAD}")
    total = _V2_FIXED + length
    if len(data) < total:
        return NEED_MORE
    block = bytes(data[_V2_FIXED:total])
    if command == _CMD_LOCAL:
        # Health checks from the proxy itself: the family and addresses are to be ignored.
        return Parsed(None, None, True, total, 2)
    if family == _FAM_UNSPEC:
        return Parsed(None, None, True, total, 2)
    need = _ADDRESS_BLOCK.get(family)
    if need is None:
        return Invalid(f"PROXY v2 address family 0x{family:02x} is not a stream family")
    if length < need:
        return Invalid(f"PROXY v2 length {length} is too short for family 0x{family:02x}")
    problem = _check_tlvs(block, need)
    if problem:
        return Invalid(problem)
    if family == _FAM_TCP4:
        src4, dst4, sport, dport = struct.unpack_from("!4s4sHH", block)
        source = (str(ipaddress.IPv4Address(src4)), sport)
        dest = (str(ipaddress.IPv4Address(dst4)), dport)
    elif family == _FAM_TCP6:
        src6, dst6, sport, dport = struct.unpack_from("!16s16sHH", block)
        source = (str(ipaddress.IPv6Address(src6)), sport)
        dest = (str(ipaddress.IPv6Address(dst6)), dport)
    else:  # a Unix-socket client: ASGI has no address for it
        return Parsed(None, None, False, total, 2)
    return Parsed(source, dest, False, total, 2)


def _check_tlvs(block: bytes, offset: int) -> str | None:
    """Walk the TLVs after the address block; they are skipped, but must fit exactly."""
    end = len(block)
    while offset < end:
        if end - offset < _TLV_HEADER:
            return "PROXY v2 TLV is truncated"
        (size,) = struct.unpack_from("!H", block, offset + 1)
        offset += _TLV_HEADER + size
        if offset > end:
            return "PROXY v2 TLV overruns the header"
    return None


class ProxyHeaderReader:
    """Accumulates a connection's first bytes until :func:`parse` decides."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Result:
        """Add received bytes; on Parsed, ``remainder()`` holds what follows the header."""
        self._buffer += data
        return parse(self._buffer)

    def remainder(self, consumed: int) -> bytes:
        return bytes(self._buffer[consumed:])
