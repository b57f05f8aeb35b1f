"""The WebSocket opening handshake, free of I/O.

Turns the HTTP scope of an upgrade request into a validated ``websockets`` ServerProtocol and
the ASGI websocket scope, and renders the bytes of every possible handshake answer: the 101
built from the app's ``websocket.accept``, the 403 of a ``websocket.close`` before accept, the
app's own denial response, and the 4xx of a handshake that is invalid on its own.
"""

from __future__ import annotations

import http
import logging
import re
from collections.abc import Iterable
from typing import Any

from corral.config import Config
from corral.grammar import TOKEN
from corral.worker.asgi.pathsend import EXTENSION as PATHSEND
from corral.worker.asgi.types import Message
from websockets.datastructures import Headers
from websockets.exceptions import InvalidHeader, InvalidHeaderValue
from websockets.extensions.base import ServerExtensionFactory
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.headers import parse_subprotocol
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

#: The ASGI version block of every websocket scope. Spec 2.4 has the close ``reason`` in
#: both directions and the denial-response extension.
ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}

#: websockets' own deflate defaults (12-bit windows, memLevel 5): about 1/8 of zlib's default
#: memory per connection for a compression ratio close to the full window on small messages.
_DEFLATE_WINDOW_BITS = 12
_DEFLATE_MEM_LEVEL = 5

# Header names the app puts in a handshake answer must be RFC 9110 tokens, and values may
# not hold CR, LF or NUL (either would let an app split the response).
_VALUE = re.compile(rb"[\x09\x20-\x7e\x80-\xff]*")

#: websockets' handshake logs (debug only) go under corral's error logger.
PROTOCOL_LOGGER = logging.getLogger("corral.error.websockets")
_logger = logging.getLogger("corral.error")


class HandshakeError(RuntimeError):
    """The app sent a handshake message corral cannot turn into a valid HTTP answer."""


def extension_factories(config: Config) -> list[ServerExtensionFactory]:
    """The extensions offered to clients: permessage-deflate (RFC 7692) unless disabled."""
    if not config.deflate:
        return []
    return [
        ServerPerMessageDeflateFactory(
            server_max_window_bits=_DEFLATE_WINDOW_BITS,
            client_max_window_bits=_DEFLATE_WINDOW_BITS,
            compress_settings={"memLevel": _DEFLATE_MEM_LEVEL},
        )
    ]


def validate(
    scope: dict[str, Any], config: Config, factories: list[ServerExtensionFactory]
) -> tuple[ServerProtocol, Response]:
    """Check the upgrade request and negotiate extensions, before the app is involved.

    Returns websockets' handshake protocol (its ``extensions`` are the negotiated ones) and
    its answer: a 101 template when the request is a valid handshake, otherwise the complete
    rejection to send (405, 426, 400, 505).
    """
    headers = Headers()
    for name, value in scope["headers"]:
        headers[name.decode("latin-1")] = value.decode("latin-1")
    request = Request(
        path=scope.get("path", "/"),
        headers=headers,
        method=scope.get("method", "GET"),
        protocol="HTTP/" + scope.get("http_version", "1.1"),
    )
    protocol = ServerProtocol(extensions=factories, logger=PROTOCOL_LOGGER)
    response = protocol.accept(request)
    if response.status_code != 101:
        _explain_version(protocol.handshake_exc, response)
    return protocol, response


def _explain_version(exc: Exception | None, response: Response) -> None:
    """RFC 6455 4.4: a version the server does not speak gets 426 and the one it does."""
    if isinstance(exc, InvalidHeader) and exc.name == "Sec-WebSocket-Version":
        response.headers["Sec-WebSocket-Version"] = "13"
        if isinstance(exc, InvalidHeaderValue):
            response.status_code = 426
            response.reason_phrase = http.HTTPStatus(426).phrase


def websocket_scope(http_scope: dict[str, Any]) -> dict[str, Any]:
    """The ASGI websocket scope for an upgrade request, from its complete HTTP scope."""
    subprotocols: list[str] = []
    for name, value in http_scope["headers"]:
        if name == b"sec-websocket-protocol":
            subprotocols.extend(parse_subprotocol(value.decode("latin-1")))
    # The HTTP scope's extensions (TLS) carry over, except what only HTTP responses support.
    extensions = dict(http_scope.get("extensions") or {})
    extensions.pop(PATHSEND, None)
    extensions["websocket.http.response"] = {}
    scope: dict[str, Any] = {
        "type": "websocket",
        "asgi": ASGI_VERSION,
        "http_version": http_scope.get("http_version", "1.1"),
        "scheme": "wss" if http_scope.get("scheme") == "https" else "ws",
        "server": http_scope.get("server"),
        "client": http_scope.get("client"),
        "root_path": http_scope.get("root_path", ""),
        "path": http_scope["path"],
        "raw_path": http_scope.get("raw_path"),
        "query_string": http_scope.get("query_string", b""),
        "headers": http_scope["headers"],
        "subprotocols": subprotocols,
        "extensions": extensions,
    }
    if "state" in http_scope:
        scope["state"] = http_scope["state"]
    return scope


def _check_headers(headers: Iterable[Any]) -> list[tuple[bytes, bytes]]:
    """The app's headers as validated (name, value) byte pairs."""
    out: list[tuple[bytes, bytes]] = []
    for item in headers:
        name, value = item
        name = bytes(name)
        value = bytes(value)
        if not TOKEN.fullmatch(name):
            raise HandshakeError(f"invalid header name {name!r}")
        if not _VALUE.fullmatch(value):
            raise HandshakeError(f"invalid header value {value!r} for {name!r}")
        out.append((name.lower(), value))
    return out


def _render(
    status: int, head: list[tuple[bytes, bytes]], defaults: list[tuple[bytes, bytes]]
) -> bytearray:
    """Status line plus headers; a default is added only when the head lacks that name."""
    try:
        phrase = http.HTTPStatus(status).phrase.encode()
    except ValueError:
        phrase = b""
    out = bytearray(b"HTTP/1.1 %d %s\r\n" % (status, phrase))
    present = {name for name, _ in head}
    for name, value in defaults:
        if name not in present:
            out += b"%s: %s\r\n" % (name, value)
    for name, value in head:
        out += b"%s: %s\r\n" % (name, value)
    out += b"\r\n"
    return out


def accept_response(
    template: Response,
    message: Message,
    defaults: list[tuple[bytes, bytes]],
) -> bytes:
    """The 101 for the app's ``websocket.accept``: subprotocol and extra headers included."""
    subprotocol = message.get("subprotocol")
    extra: list[tuple[bytes, bytes]] = []
    for name, value in _check_headers(message.get("headers") or ()):
        if name == b"sec-websocket-protocol":
            # ASGI says to use the "subprotocol" key; honour the header when that is absent.
            if subprotocol is None:
                subprotocol = value.decode("latin-1")
            continue
        if name in (b"upgrade", b"connection", b"sec-websocket-accept", b"content-length"):
            continue  # the handshake's own headers are corral's to write
        extra.append((name, value))
    head = [
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-accept", template.headers["Sec-WebSocket-Accept"].encode()),
    ]
    negotiated = template.headers.get("Sec-WebSocket-Extensions")
    if negotiated is not None:
        head.append((b"sec-websocket-extensions", negotiated.encode()))
    if subprotocol is not None:
        head.append((b"sec-websocket-protocol", subprotocol.encode()))
    head.extend(extra)
    return bytes(_render(101, head, defaults))


def plain_response(status: int, defaults: list[tuple[bytes, bytes]], body: bytes = b"") -> bytes:
    """A small closing response: the 403 of a denial, the 500 of a failed app."""
    head = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"%d" % len(body)),
        (b"connection", b"close"),
    ]
    return bytes(_render(status, head, defaults)) + body


def denial_response(
    status: Any, headers: Iterable[Any], body: bytes, defaults: list[tuple[bytes, bytes]]
) -> bytes:
    """The app's own response (``websocket.http.response.*``), framed by Content-Length."""
    if not isinstance(status, int) or not 200 <= status <= 999:
        raise HandshakeError(f"invalid denial response status {status!r}")
    head = [
        (name, value)
        for name, value in _check_headers(headers)
        if name not in (b"content-length", b"transfer-encoding", b"connection")
    ]
    head.append((b"content-length", b"%d" % len(body)))
    head.append((b"connection", b"close"))
    return bytes(_render(status, head, defaults)) + body


def client_text(scope: dict[str, Any]) -> str:
    """``host:port`` of the client, for log lines."""
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"


def log_request(scope: dict[str, Any], status: int | None) -> None:
    """uvicorn's line for a handshake: ``... "WebSocket /path" [accepted]`` or the status."""
    path = scope.get("path", "")
    query = scope.get("query_string", b"")
    if query:
        path = f"{path}?{query.decode('latin-1')}"
    outcome = "[accepted]" if status is None else str(status)
    _logger.info('%s - "WebSocket %s" %s', client_text(scope), path, outcome)
