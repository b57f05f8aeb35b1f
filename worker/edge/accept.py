"""The connection edge of a serving process: PROXY protocol header and TLS handshake.

Without TLS or ``--proxy-protocol`` none of this runs. With either, the server's acceptor
hands each accepted socket to :func:`connect_edge`, which reads the PROXY header straight
from the socket (never a byte past it, so a TLS ClientHello that follows is untouched),
then calls ``loop.connect_accepted_socket`` with the SSL context. That is what lets a
failed handshake be one debug line rather than silence or a traceback, and what lets PROXY
and TLS combine.

:class:`Edge` holds the per-process settings. It is built in the serving process (after the
fork), so each new worker reads the certificate files afresh: a reload picks up renewals.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from corral.tls import create_ssl_context
from corral.worker.clientlog import Kind, client_log
from corral.worker.edge.proxy_headers import TrustedProxies, parse_trusted
from corral.worker.edge.proxy_protocol import Invalid, Parsed, parse

if TYPE_CHECKING:
    from corral.config import Config

logger = logging.getLogger("corral.error")

#: Bytes looked at per peek: every v1 header and a v2 header with a few TLVs fit at once;
#: a longer v2 header (up to V2_MAX_PAYLOAD) just takes more rounds.
_PEEK_SIZE = 256


@dataclass(frozen=True, slots=True)
class Proxied:
    """The client named by a PROXY header (None: it connected over a Unix socket)."""

    client: tuple[str, int] | None


#: Builds the connection's protocol: called with a ``Proxied`` when a PROXY header named the
#: client, with no argument otherwise.
ProtocolFactory = Callable[..., asyncio.BaseProtocol]


class Edge:
    """TLS context, PROXY protocol switch and trusted proxies of one serving process."""

    __slots__ = ("handshake_timeout", "proxy_protocol", "ssl", "trusted")

    def __init__(self, config: Config) -> None:
        self.ssl: ssl.SSLContext | None = create_ssl_context(config)
        self.proxy_protocol = config.proxy_protocol
        self.trusted: TrustedProxies | None = None
        if config.proxy_headers:
            try:
                self.trusted = parse_trusted(config.trusted_proxies)
            except ValueError as exc:
                from corral.errors import ConfigError

                raise ConfigError("--forwarded-allow-ips", str(exc)) from None
        # A client gets as long for the PROXY header and the handshake as for a request head.
        self.handshake_timeout = config.timeout_request_header

    @property
    def needs_acceptor(self) -> bool:
        return self.ssl is not None or self.proxy_protocol


class ProxyHeaderError(Exception):
    """No valid PROXY header; ``quiet`` when the peer just closed without sending one."""

    def __init__(self, reason: str, *, quiet: bool = False) -> None:
        super().__init__(reason)
        self.quiet = quiet


async def read_proxy_header(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> Parsed:
    """Consume exactly the PROXY header from a non-blocking socket.

    Peeks at what has arrived, and consumes only bytes that belong to the header: while
    the header is incomplete every byte received is part of it, and once it parses exactly
    ``consumed`` bytes are taken. Raises ProxyHeaderError.
    """
    buffer = bytearray()
    while True:
        try:
            peeked = sock.recv(_PEEK_SIZE, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            peeked = b""
        if peeked:
            result = parse(buffer + peeked)
            if isinstance(result, Parsed):
                _recv_exactly(sock, result.consumed - len(buffer))
                return result
            if isinstance(result, Invalid):
                raise ProxyHeaderError(result.reason)
            buffer += _recv_exactly(sock, len(peeked))
        # Wait for more by consuming one byte: the header is incomplete, so it is ours.
        more = await loop.sock_recv(sock, 1)
        if not more:
            if buffer:
                raise ProxyHeaderError("connection closed in the middle of the PROXY header")
            raise ProxyHeaderError("connection closed before a PROXY header", quiet=True)
        buffer += more
        result = parse(buffer)
        if isinstance(result, Invalid):
            raise ProxyHeaderError(result.reason)
        if isinstance(result, Parsed):
            return result


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    """Take ``size`` bytes that a peek showed are already buffered in the kernel."""
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ProxyHeaderError("connection closed in the middle of the PROXY header")
        data += chunk
    return data


def _describe(sock: socket.socket, proxied: Proxied | None = None) -> str:
    """The client for a log line: the one a PROXY header named, else the socket's peer."""
    if proxied is not None and proxied.client is not None:
        return f"{proxied.client[0]}:{proxied.client[1]}"
    try:
        peer = sock.getpeername()
    except OSError:
        return "a client"
    if isinstance(peer, tuple):
        return f"{peer[0]}:{peer[1]}"
    return "a unix socket client"


async def connect_edge(
    loop: asyncio.AbstractEventLoop,
    conn: socket.socket,
    edge: Edge,
    factory: ProtocolFactory,
) -> None:
    """Set up one accepted connection: PROXY header (if on), then TLS (if on), then protocol.

    Never raises on a bad client: a bad PROXY header is one warning line (debug when the
    peer just closed, as load-balancer TCP health checks do), a failed TLS handshake one
    debug line; either way the socket is closed.
    """
    proxied: Proxied | None = None
    phase = "PROXY header"
    try:
        if edge.proxy_protocol:
            header = await asyncio.wait_for(read_proxy_header(loop, conn), edge.handshake_timeout)
            if not header.is_local:
                proxied = Proxied(header.source)
        phase = "TLS handshake" if edge.ssl is not None else "Connection setup"
        await loop.connect_accepted_socket(
            (lambda: factory(proxied)) if proxied is not None else factory,
            conn,
            ssl=edge.ssl,
            ssl_handshake_timeout=edge.handshake_timeout if edge.ssl else None,
        )
    except ProxyHeaderError as exc:
        if exc.quiet:
            logger.debug("Refused connection from %s: %s", _describe(conn, proxied), exc)
        else:
            who = _describe(conn, proxied)
            client_log(
                Kind.PROXY_REFUSED, logging.WARNING, "Refused connection from %s: %s", who, exc
            )
        conn.close()
    except OSError as exc:  # includes ssl.SSLError, resets and TimeoutError
        who = _describe(conn, proxied)
        if phase == "PROXY header" and isinstance(exc, TimeoutError):
            message = "Refused connection from %s: no PROXY header in time"
            client_log(Kind.PROXY_REFUSED, logging.WARNING, message, who)
        elif phase == "PROXY header":
            logger.debug("Connection from %s failed before its PROXY header: %s", who, exc)
        else:
            logger.debug("%s with %s failed: %s", phase, who, exc)
        conn.close()
    except asyncio.CancelledError:
        conn.close()
        raise
