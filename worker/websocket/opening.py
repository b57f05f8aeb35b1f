"""A WebSocket connection before the app has accepted it: the opening handshake's answers.

:class:`~corral.worker.websocket.connection.WebSocketConnection` runs the open connection (frames,
close, keepalive); its base class here covers what comes first: holding bytes a client sends
before the accept, answering an invalid handshake without the app, and carrying out the
app's answer to a valid one (101 on ``websocket.accept``, 403 on ``websocket.close``, or its
own denial response).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from corral.worker.transport.base import PAUSE_HANDSHAKE, ClientDisconnected, TransportBase
from corral.worker.websocket import handshake as ws_handshake
from corral.worker.websocket.phase import InvalidTransition, Phase, check_move
from websockets.frames import CloseCode

if TYPE_CHECKING:
    from corral.worker.asgi.types import Message
    from corral.worker.state import ServerState
    from corral.worker.websocket.inbox import Inbox
    from corral.worker.websocket.keepalive import Keepalive
    from websockets.http11 import Response

logger = logging.getLogger("corral.error")

#: Bytes buffered from a client that sends before the app has accepted, before reading pauses.
HANDSHAKE_BUFFER_LIMIT = 64 * 1024


class WebSocketOpening(TransportBase):
    """The handshake half of a WebSocket connection; the subclass sets every attribute."""

    #: The protocol answers pings by itself: while the peer reads nothing, corral reads
    #: nothing either, so pongs can't pile up in the buffer.
    pause_reading_with_writing = True

    server_state: ServerState
    scope: dict[str, Any]
    phase: Phase
    inbox: Inbox
    keepalive: Keepalive
    _template: Response
    _pending: bytearray | None  # bytes received before accept
    _denial: tuple[Any, Any, list[bytes]] | None  # status, headers, body chunks so far

    @property
    def client_text(self) -> str:
        return ws_handshake.client_text(self.scope)

    def _move(self, phase: Phase) -> None:
        self.phase = check_move(self.phase, phase)

    def _defaults(self) -> list[tuple[bytes, bytes]]:
        return self.server_state.default_headers()

    def reject(self, response: Response) -> None:
        """Answer an invalid handshake without involving the app, and close."""
        ws_handshake.log_request(self.scope, response.status_code)
        self.transport.write(response.serialize())
        self._move(Phase.CLOSED)
        self.close_transport()

    def _hold(self, data: bytes) -> None:
        """Keep bytes that arrive before the app accepted (pausing past a limit)."""
        pending = self._pending
        if pending is None:
            return
        pending += data
        if len(pending) > HANDSHAKE_BUFFER_LIMIT:
            self.pause_reading(PAUSE_HANDSHAKE)

    def _handshake_message(self, kind: str, message: Message) -> None:
        if kind == "websocket.accept":
            self._accept(message)
        elif kind == "websocket.close":
            self._refuse(403)
        elif kind == "websocket.http.response.start":
            self._denial = (message.get("status"), message.get("headers") or (), [])
            self._move(Phase.RESPONDING)
        else:
            raise RuntimeError(
                "Expected 'websocket.accept', 'websocket.close' or"
                f" 'websocket.http.response.start' before the handshake, got {kind!r}"
            )

    def _accept(self, message: Message) -> None:
        head = ws_handshake.accept_response(self._template, message, self._defaults())
        self.transport.write(head)
        self._move(Phase.OPEN)
        ws_handshake.log_request(self.scope, None)
        logger.info("connection open")
        pending, self._pending = self._pending, None
        self.resume_reading(PAUSE_HANDSHAKE)
        self.keepalive.start()
        if pending:
            self.data_received(bytes(pending))

    def _denial_body(self, message: Message) -> None:
        if self._denial is None:  # RESPONDING is entered together with _denial
            raise InvalidTransition("denial response body before its start")
        status, headers, chunks = self._denial
        chunks.append(bytes(message.get("body") or b""))
        if message.get("more_body"):
            return
        response = ws_handshake.denial_response(status, headers, b"".join(chunks), self._defaults())
        self._respond(response, status)

    def _refuse(self, status: int) -> None:
        """Answer the handshake with corral's own plain ``status`` response."""
        self._respond(ws_handshake.plain_response(status, self._defaults()), status)

    def _respond(self, response: bytes, status: int) -> None:
        """Send a final HTTP answer to the handshake and close the connection."""
        if self.gone:
            raise ClientDisconnected("the client went away during the handshake")
        ws_handshake.log_request(self.scope, status)
        self.transport.write(response)
        self._move(Phase.CLOSED)
        self.close_transport()
        self.inbox.finish(CloseCode.ABNORMAL_CLOSURE, "")
