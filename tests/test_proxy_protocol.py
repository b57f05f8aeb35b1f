"""PROXY protocol v1/v2: header parsing (pure) and the edge acceptor over real sockets."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import uvloop
from corral.config import Config
from corral.worker.edge.accept import Edge, Proxied
from corral.worker.edge.proxy_protocol import (
    V1_MAX_LENGTH,
    V2_MAX_PAYLOAD,
    V2_SIGNATURE,
    Invalid,
    NeedMore,
    Parsed,
    ProxyHeaderReader,
    parse,
)
from corral.worker.serving import Acceptor
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import wait_for
from tests.edge_harness import DEADLINE, STACKS, serve


def v2(
    command: int = 1, family: int = 0x11, block: bytes | None = None, tlvs: bytes = b""
) -> bytes:
    """Build a v2 header; the default block is 1.2.3.4:1000 -> 5.6.7.8:443."""
    if block is None:
        block = struct.pack("!4s4sHH", bytes([1, 2, 3, 4]), bytes([5, 6, 7, 8]), 1000, 443)
    payload = block + tlvs
    return (
        V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(payload)) + payload
    )


def tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!BH", kind, len(value)) + value


# --- v1 -----------------------------------------------------------------------------------


def test_v1_tcp4() -> None:
    """A v1 TCP4 header gives source, destination and its length."""
    line = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n"
    result = parse(line + b"GET / HTTP/1.1\r\n")
    assert result == Parsed(("192.0.2.1", 56324), ("198.51.100.2", 443), False, len(line), 1)


def test_v1_tcp6() -> None:
    """A v1 TCP6 header gives IPv6 addresses."""
    result = parse(b"PROXY TCP6 2001:db8::1 ::1 65535 80\r\n")
    assert isinstance(result, Parsed)
    assert result.source == ("2001:db8::1", 65535) and result.dest == ("::1", 80)


@pytest.mark.parametrize("line", [b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN ffff::1 ::1 1 2\r\n"])
def test_v1_unknown_keeps_peer(line: bytes) -> None:
    """v1 UNKNOWN is valid and means: keep the real peer address."""
    result = parse(line + b"rest")
    assert result == Parsed(None, None, True, len(line), 1)


def test_v1_longest_header_accepted() -> None:
    """The spec's 107-byte worst case is accepted."""
    addr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    line = f"PROXY TCP6 {addr} {addr} 65535 65535\r\n".encode()
    assert len(line) == 104
    assert isinstance(parse(line), Parsed)
    unknown = b"PROXY UNKNOWN " + b"x" * (V1_MAX_LENGTH - 16) + b"\r\n"
    assert len(unknown) == V1_MAX_LENGTH and isinstance(parse(unknown), Parsed)


@pytest.mark.parametrize(
    "data",
    [
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r",
        b"PROXY ",
        b"PROX",
        b"P",
        b"",
    ],
)
def test_v1_partial_needs_more(data: bytes) -> None:
    """An incomplete v1 header asks for more bytes."""
    assert isinstance(parse(data), NeedMore)


@pytest.mark.parametrize(
    "data",
    [
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
        b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
        b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
        b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
        b"PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n",
        b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 \xff 2\r\n",
        b"PROXY " + b"A" * 200,
        b"GET / HTTP/1.1\r\n\r\n",
        b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"\x16\x03\x01\x02\x00",
    ],
)
def test_v1_garbage_invalid(data: bytes) -> None:
    """Malformed, overlong or absent v1 headers are Invalid with a reason."""
    result = parse(data)
    assert isinstance(result, Invalid) and result.reason


# --- v2 -----------------------------------------------------------------------------------


def test_v2_tcp4() -> None:
    """A v2 PROXY TCP4 header gives the addresses and consumes exactly its length."""
    data = v2() + b"GET"
    assert parse(data) == Parsed(("1.2.3.4", 1000), ("5.6.7.8", 443), False, len(data) - 3, 2)


def test_v2_tcp6() -> None:
    """A v2 PROXY TCP6 header gives IPv6 addresses."""
    src, dst = ipaddress.IPv6Address("2001:db8::5"), ipaddress.IPv6Address("::1")
    block = struct.pack("!16s16sHH", src.packed, dst.packed, 5555, 8443)
    result = parse(v2(family=0x21, block=block))
    assert isinstance(result, Parsed)
    assert result.source == ("2001:db8::5", 5555) and result.dest == ("::1", 8443)


def test_v2_tlvs_skipped() -> None:
    """TLVs (ALPN, authority, AWS VPC endpoint, NOOP padding) are skipped exactly."""
    tlvs = tlv(0x01, b"h2") + tlv(0x02, b"example.com") + tlv(0xEA, b"\x01vpce-0abc")
    tlvs += tlv(0x04, b"\0" * 10) + tlv(0x05, b"")
    data = v2(tlvs=tlvs)
    result = parse(data + b"GET")
    assert isinstance(result, Parsed) and result.consumed == len(data)
    assert result.source == ("1.2.3.4", 1000)


@pytest.mark.parametrize("family", [0x00, 0x11, 0x21, 0x31, 0x12, 0x55])
def test_v2_local_keeps_peer(family: int) -> None:
    """v2 LOCAL is valid whatever the family and means: keep the real peer address."""
    data = v2(command=0, family=family, block=b"\0" * 12)
    assert parse(data) == Parsed(None, None, True, len(data), 2)


def test_v2_unspec_proxy_keeps_peer() -> None:
    """v2 PROXY with family UNSPEC carries no address: keep the real peer."""
    result = parse(v2(family=0x00, block=b""))
    assert isinstance(result, Parsed) and result.is_local


def test_v2_unix_source_has_no_address() -> None:
    """v2 PROXY over AF_UNIX is valid and leaves the client without an address."""
    block = b"/tmp/a".ljust(108, b"\0") + b"/tmp/b".ljust(108, b"\0")
    result = parse(v2(family=0x31, block=block))
    assert isinstance(result, Parsed) and result.source is None and not result.is_local


def test_v2_partial_needs_more_at_every_cut() -> None:
    """Every proper prefix of a v2 header asks for more bytes."""
    data = v2(tlvs=tlv(0x02, b"example.com"))
    for cut in range(len(data)):
        assert isinstance(parse(data[:cut]), NeedMore), cut


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (V2_SIGNATURE + b"\x11\x11\x00\x0c" + b"\0" * 12, "version"),
        (V2_SIGNATURE + b"\x22\x11\x00\x0c" + b"\0" * 12, "command"),
        (v2(family=0x12), "stream"),
        (v2(family=0x22, block=b"\0" * 36), "stream"),
        (v2(family=0x44), "stream"),
        (v2(family=0x21), "too short"),
        (v2(block=b"\0" * 11), "too short"),
        (v2(tlvs=b"\x01\x00"), "truncated"),
        (v2(tlvs=tlv(0x01, b"abc")[:-1] + b""), "overruns"),
        (v2(tlvs=b"\x02\xff\xff"), "overruns"),
        (V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", V2_MAX_PAYLOAD + 1), "exceeds"),
    ],
)
def test_v2_garbage_invalid(data: bytes, reason: str) -> None:
    """Bad version, command, family, lengths and TLVs are Invalid with a clear reason."""
    result = parse(data)
    assert isinstance(result, Invalid) and reason in result.reason


def test_reader_accumulates_and_returns_remainder() -> None:
    """Fed byte by byte, the reader decides once and keeps the bytes after the header."""
    reader = ProxyHeaderReader()
    line = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"
    data = line + b"GET / HTTP/1.1\r\n"
    results = [reader.feed(data[i : i + 1]) for i in range(len(line))]
    assert all(isinstance(r, NeedMore) for r in results[:-1])
    final = results[-1]
    assert isinstance(final, Parsed) and final.consumed == len(line)
    reader.feed(data[len(line) :])
    assert reader.remainder(final.consumed) == b"GET / HTTP/1.1\r\n"


@given(st.binary(max_size=300))
def test_fuzz_never_raises(data: bytes) -> None:
    """Arbitrary bytes give NeedMore, Parsed within bounds, or Invalid; never an exception."""
    result = parse(data)
    if isinstance(result, Parsed):
        assert 0 < result.consumed <= len(data)


@given(st.binary(min_size=16, max_size=80))
def test_fuzz_v2_after_signature(rest: bytes) -> None:
    """Random bytes after the v2 signature never raise or over-consume."""
    data = V2_SIGNATURE + rest
    result = parse(data)
    if isinstance(result, Parsed):
        assert result.consumed <= len(data)


# --- over real sockets: the edge acceptor -------------------------------------------------


LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def edge_settings(**overrides: Any) -> Config:
    """A real Config for the edge (PROXY protocol on, the test client trusted)."""
    values: dict[str, Any] = {
        "proxy_protocol": True,
        "forwarded_allow_ips": "127.0.0.1",
        "timeout_request_header": 5.0,
    }
    values.update(overrides)
    return Config(**values)


class Reporter(asyncio.Protocol):
    """Answers with the client the edge handed over, then echoes the first data received."""

    def __init__(self, proxied: Proxied | None = None) -> None:
        self.proxied = proxied

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport
        client = self.proxied.client if self.proxied else "peer"
        transport.write(f"client={client}\n".encode())

    def data_received(self, data: bytes) -> None:
        self.transport.write(b"data=" + data)
        self.transport.close()


def run_edge(
    loop_name: str, payload: bytes, *, family: int = socket.AF_INET, **settings: Any
) -> bytes:
    """Serve one connection through an EdgeAcceptor; send payload, return all bytes read."""
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"

    async def main() -> bytes:
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.bind((host, 0))
        listener.listen()
        listener.setblocking(False)
        acceptor = Acceptor(
            asyncio.get_running_loop(), listener, Reporter, Edge(edge_settings(**settings))
        )
        acceptor.start()
        try:
            reader, writer = await asyncio.open_connection(host, listener.getsockname()[1])
            writer.write(payload)
            writer.write_eof()  # a truncated header is truncated for good
            try:
                data = await reader.read()
            except ConnectionResetError:  # refused with our bytes unread: the kernel resets
                data = b""
            writer.close()
            return data
        finally:
            acceptor.stop()
            listener.close()

    loop = LOOPS[loop_name]()
    try:
        return loop.run_until_complete(asyncio.wait_for(main(), 10))
    finally:
        loop.close()


@pytest.fixture(params=sorted(LOOPS))
def loop_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_socket_v1_client_and_following_bytes(loop_name: str) -> None:
    """Over a socket, a v1 header names the client and the request bytes after it survive."""
    data = run_edge(loop_name, b"PROXY TCP4 192.0.2.7 10.0.0.1 4321 80\r\nGET")
    assert data == b"client=('192.0.2.7', 4321)\ndata=GET"


def test_socket_v2_with_tlvs(loop_name: str) -> None:
    """Over a socket, a v2 header with TLVs names the client; TLVs are skipped."""
    src, dst = ipaddress.IPv6Address("2001:db8::9"), ipaddress.IPv6Address("2001:db8::1")
    block = struct.pack("!16s16sHH", src.packed, dst.packed, 7000, 443)
    header = v2(family=0x21, block=block, tlvs=tlv(0x02, b"example.com") + tlv(0x04, b"\0" * 5))
    assert run_edge(loop_name, header + b"xyz") == b"client=('2001:db8::9', 7000)\ndata=xyz"


def test_socket_v2_local_keeps_peer(loop_name: str) -> None:
    """Over a socket, v2 LOCAL keeps the real peer address."""
    assert (
        run_edge(loop_name, v2(command=0, family=0, block=b"") + b"hi") == b"client=peer\ndata=hi"
    )


def test_socket_header_split_across_writes(loop_name: str) -> None:
    """A header arriving in pieces is assembled without eating the bytes after it."""

    async def main() -> bytes:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        acceptor = Acceptor(asyncio.get_running_loop(), listener, Reporter, Edge(edge_settings()))
        acceptor.start()
        try:
            reader, writer = await asyncio.open_connection(*listener.getsockname())
            for piece in (b"PRO", b"XY TCP4 1.2.3.4 ", b"5.6.7.8 1 2\r", b"\nGET"):
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0)
            data = await reader.read()
            writer.close()
            return data
        finally:
            acceptor.stop()
            listener.close()

    loop = LOOPS[loop_name]()
    try:
        assert loop.run_until_complete(main()) == b"client=('1.2.3.4', 1)\ndata=GET"
    finally:
        loop.close()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "no PROXY protocol header"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", "port"),
        (b"PROXY TCP4 1.2.3.4", "in the middle"),
        (V2_SIGNATURE + b"\x21\x11\x00\x0c" + b"\0" * 5, "in the middle"),
        (v2(tlvs=b"\x02\xff\xff"), "overruns"),
        (b"\x00" * 200, "no PROXY protocol header"),
    ],
)
def test_socket_bad_header_closes_with_one_line(
    loop_name: str, payload: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Garbage, malformed and truncated headers close the connection with one log line."""
    caplog.set_level(logging.DEBUG, logger="corral.error")
    assert run_edge(loop_name, payload) == b""
    lines = [r for r in caplog.records if r.name == "corral.error"]
    assert len(lines) == 1 and reason in lines[0].getMessage()
    assert lines[0].levelno == logging.WARNING and lines[0].exc_info is None


def test_socket_ipv6_loopback(loop_name: str) -> None:
    """PROXY headers are read on an IPv6 loopback listener too."""
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    data = run_edge(loop_name, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n.", family=socket.AF_INET6)
    assert data == b"client=('1.2.3.4', 1)\ndata=."


# --- end to end: a real corral Server with --proxy-protocol --------------------------------------

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def exchange(port: int, payload: bytes, *, host: str = "127.0.0.1", eof: bool = False) -> bytes:
    """Send raw bytes, optionally half-close, and read until the server closes."""
    with socket.create_connection((host, port), timeout=DEADLINE) as sock:
        sock.sendall(payload)
        if eof:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    return b"".join(chunks)


def report_of(response: bytes) -> dict[str, Any]:
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), response[:200]
    return dict(json.loads(body))


@pytest.mark.parametrize(("loop_kind", "http_kind"), STACKS)
def test_server_v1_and_v2_name_the_client(loop_kind: str, http_kind: str) -> None:
    """With --proxy-protocol, v1 and v2 (with TLVs) headers become the scope's client."""
    src = ipaddress.IPv6Address("2001:db8::42")
    block = struct.pack("!16s16sHH", src.packed, ipaddress.IPv6Address("::1").packed, 999, 80)
    tlvs = tlv(0x01, b"http/1.1") + tlv(0x20, b"\x01\0\0\0\0") + tlv(0x04, b"\0" * 3)
    with serve(loop_kind, http_kind, proxy_protocol=True) as running:
        port = running.port()
        one = report_of(exchange(port, b"PROXY TCP4 203.0.113.5 10.0.0.1 5555 80\r\n" + REQUEST))
        two = report_of(exchange(port, v2(family=0x21, block=block, tlvs=tlvs) + REQUEST))
        local = report_of(exchange(port, v2(command=0, family=0, block=b"") + REQUEST))
        unknown = report_of(exchange(port, b"PROXY UNKNOWN\r\n" + REQUEST))
    assert one["client"] == ["203.0.113.5", 5555]
    assert two["client"] == ["2001:db8::42", 999]
    assert local["client"][0] == "127.0.0.1" and local["client"][1] != 0
    assert unknown["client"][0] == "127.0.0.1"


@pytest.mark.parametrize(("loop_kind", "http_kind"), STACKS[::3])
@pytest.mark.parametrize(
    ("payload", "eof", "reason"),
    [
        (REQUEST, False, "no PROXY protocol header"),
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\0" * 40, False, "no PROXY"),
        (b"PROXY TCP4 203.0.113.5 10.0.0.1 55", True, "in the middle"),
        (v2(tlvs=tlv(0x02, b"abc"))[:-2], True, "in the middle"),
        (v2(tlvs=b"\x02\x00\xff") + REQUEST, False, "overruns"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n" + REQUEST, False, "6 fields"),
    ],
)
def test_server_refuses_bad_headers_with_one_line(
    loop_kind: str,
    http_kind: str,
    payload: bytes,
    eof: bool,
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Missing, garbage, truncated and malformed headers: closed unanswered, one log line."""
    caplog.set_level(logging.DEBUG, logger="corral")
    with serve(loop_kind, http_kind, proxy_protocol=True) as running:
        assert exchange(running.port(), payload, eof=eof) == b""
        wait_for(lambda: [r for r in caplog.records if "Refused" in r.getMessage()])
    refused = [r for r in caplog.records if "Refused" in r.getMessage()]
    assert len(refused) == 1 and reason in refused[0].getMessage()
    assert refused[0].levelno == logging.WARNING
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not [r for r in caplog.records if r.name == "corral.access"]


def test_server_health_check_connect_close_is_quiet(caplog: pytest.LogCaptureFixture) -> None:
    """A load balancer's TCP check (connect, then close) is only a debug line."""
    caplog.set_level(logging.DEBUG, logger="corral")
    with serve("uvloop", "httptools", proxy_protocol=True) as running:
        assert exchange(running.port(), b"", eof=True) == b""
        wait_for(lambda: [r for r in caplog.records if "Refused" in r.getMessage()])
    refused = [r for r in caplog.records if "Refused" in r.getMessage()]
    assert len(refused) == 1 and refused[0].levelno == logging.DEBUG


def test_server_access_log_names_proxied_client(caplog: pytest.LogCaptureFixture) -> None:
    """The access line shows the client from the PROXY header."""
    caplog.set_level(logging.INFO, logger="corral.access")
    with serve("asyncio", "h11", proxy_protocol=True) as running:
        exchange(running.port(), b"PROXY TCP4 198.51.100.8 10.0.0.1 4242 80\r\n" + REQUEST)
        lines = wait_for(lambda: [r.getMessage() for r in caplog.records
                                  if r.name == "corral.access"])  # fmt: skip
    assert lines[0].startswith('198.51.100.8:4242 - "GET / HTTP/1.1" 200')


def test_server_proxy_headers_trust_the_proxied_client() -> None:
    """With both on, X-Forwarded-For counts only if the PROXY-named client is trusted."""
    forged = REQUEST.replace(b"Host: x\r\n", b"Host: x\r\nX-Forwarded-For: 6.6.6.6\r\n")
    with serve("uvloop", "httptools", proxy_protocol=True,
               forwarded_allow_ips="10.1.1.1") as running:  # fmt: skip
        port = running.port()
        outsider = report_of(exchange(port, b"PROXY TCP4 203.0.113.5 10.0.0.1 1 80\r\n" + forged))
        inner = report_of(exchange(port, b"PROXY TCP4 10.1.1.1 10.0.0.1 1 80\r\n" + forged))
    assert outsider["client"] == ["203.0.113.5", 1]
    assert inner["client"] == ["6.6.6.6", 0]


def test_server_ipv6_loopback_with_proxy_protocol() -> None:
    """PROXY headers work on an IPv6 loopback listener of the real server."""
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    with serve("uvloop", "h11", port=None, bind=("[::1]:0",), proxy_protocol=True) as running:
        data = exchange(running.port(), b"PROXY TCP6 2001:db8::1 ::1 7 80\r\n" + REQUEST,
                        host="::1")  # fmt: skip
    assert report_of(data)["client"] == ["2001:db8::1", 7]


def test_server_header_that_never_completes_times_out(caplog: pytest.LogCaptureFixture) -> None:
    """A client stuck inside its PROXY header is closed after the head timeout, one line."""
    caplog.set_level(logging.DEBUG, logger="corral")
    with serve("asyncio", "httptools", proxy_protocol=True,
               timeout_request_header=0.2) as running:  # fmt: skip
        with socket.create_connection(("127.0.0.1", running.port()), timeout=DEADLINE) as sock:
            sock.sendall(b"PROXY TCP4 1.2.3.4")
            assert sock.recv(100) == b""  # closed by the server, not by us
        wait_for(lambda: [r for r in caplog.records if "Refused" in r.getMessage()])
    refused = [r for r in caplog.records if "Refused" in r.getMessage()]
    assert len(refused) == 1 and "no PROXY header in time" in refused[0].getMessage()


def test_socket_large_v2_header_read_in_rounds(loop_name: str) -> None:
    """A v2 header far longer than one peek (TLVs of 5 KiB) is read whole, nothing more."""
    header = v2(tlvs=tlv(0xE0, b"\x01" * 5000) + tlv(0x04, b"\0" * 100))
    assert len(header) > 5000
    assert run_edge(loop_name, header + b"after") == b"client=('1.2.3.4', 1000)\ndata=after"


def test_server_proxy_protocol_over_unix_socket(tmp_path: Path) -> None:
    """A proxy on the same host can send PROXY headers over --uds too."""
    path = str(tmp_path / "pp.sock")
    with (
        serve("uvloop", "httptools", port=None, uds=path, proxy_protocol=True),
        socket.socket(socket.AF_UNIX) as sock,
    ):
        sock.settimeout(DEADLINE)
        sock.connect(path)
        sock.sendall(b"PROXY TCP4 192.0.2.33 10.0.0.1 3333 80\r\n" + REQUEST)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    assert report_of(response)["client"] == ["192.0.2.33", 3333]
