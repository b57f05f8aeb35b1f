"""WebSocket connections: the asyncio shell of one upgraded connection.

``upgrade()`` takes a connection over from the HTTP protocol once it has parsed an upgrade
request. websockets' sans-I/O ServerProtocol validates the handshake before the app hears
of it (``handshake``); the app's first message decides the answer (101, 403 or its own
response; ``opening``). From then on frames flow between corral's sans-I/O frame protocol
(``protocol``) and ``websocket.receive`` / ``websocket.send``, with corral's own ping and
close timers (``keepalive``) and the flow control both ways that every connection shares
(:class:`~corral.worker.transport.base.TransportBase`). The phases and their moves are in
``phase``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from corral.worker.asgi.types import Message
from corral.worker.clientlog import Kind, client_log
from corral.worker.state import ServerState, ShutdownReason
from corral.worker.transport.base import ClientDisconnected
from corral.worker.websocket import handshake as ws_handshake
from corral.worker.websocket.inbox import Inbox
from corral.worker.websocket.keepalive import Keepalive
from corral.worker.websocket.opening import HANDSHAKE_BUFFER_LIMIT, WebSocketOpening
from corral.worker.websocket.phase import InvalidTransition, Phase
from corral.worker.websocket.protocol import Close, WebSocketProtocol
from websockets.frames import CloseCode
from websockets.http11 import Response
from websockets.server import ServerProtocol

logger = logging.getLogger("corral.error")

#: Seconds the peer has to answer our close frame, and then to close TCP, before corral
#: drops the connection (websockets' default; long enough for a congested mobile link).
CLOSE_TIMEOUT = 10.0

__all__ = [
    "CLOSE_TIMEOUT",
    "HANDSHAKE_BUFFER_LIMIT",
    "ClientDisconnected",
    "InvalidTransition",
    "Phase",
    "WebSocketConnection",
    "upgrade",
]


def upgrade(
    state: ServerState, transport: asyncio.Transport, scope: dict[str, Any], trailing: bytes
) -> None:
    """Take over ``transport`` after the HTTP protocol parsed a WebSocket upgrade request.

    ``scope`` is that request's complete HTTP scope and ``trailing`` the bytes received after
    its head. From here on this connection belongs to the WebSocket protocol; the caller must
    forget the transport (not close it) and leave ``state.connections``.
    """
    config = state.config
    handshake, template = ws_handshake.validate(
        scope, config, ws_handshake.extension_factories(config)
    )
    connection = WebSocketConnection(state, transport, scope, handshake, template)
    transport.set_protocol(connection)
    if template.status_code != 101:
        connection.reject(template)
        return
    connection.start(trailing)


class WebSocketConnection(WebSocketOpening):
    """One upgraded connection: transport callbacks, ASGI receive/send, timers.

    Its base class :class:`~corral.worker.websocket.opening.WebSocketOpening` answers the
    handshake;
    frames are parsed and built by the sans-I/O :class:`WebSocketProtocol`.
    """

    def __init__(
        self,
        state: ServerState,
        transport: asyncio.Transport,
        http_scope: dict[str, Any],
        handshake: ServerProtocol,
        template: Response,
    ) -> None:
        config = state.config
        self.server_state = state
        self.attach(transport, config.timeout_send)
        # The extensions websockets negotiated in the handshake; frames are corral's.
        self.ws = WebSocketProtocol(handshake.extensions, config.ws_max_size)
        self.phase = Phase.HANDSHAKE
        self.scope = http_scope  # replaced by the websocket scope in start()
        self._shut_down = False  # shutdown_now() was called
        self._failing = False  # the protocol failed; its close frame goes out next tick
        self._loop = loop = asyncio.get_running_loop()
        self._template = template
        self.inbox = Inbox(loop, self, config.ws_max_queue)
        self.keepalive = Keepalive(
            loop,
            config.ws_ping_interval or 0.0,
            config.ws_ping_timeout or 0.0,
            self._send_ping,
            self._ping_timed_out,
        )
        self._pending: bytearray | None = bytearray()  # bytes received before accept
        self._denial: tuple[Any, Any, list[bytes]] | None = None
        self._close_handle: asyncio.TimerHandle | None = None

    # --- life cycle ----------------------------------------------------------------------
    def start(self, trailing: bytes) -> None:
        """Register the connection and run the app; bytes already received wait for accept."""
        self.scope = ws_handshake.websocket_scope(self.scope)
        if trailing:
            self._hold(trailing)
        if not self.transport.is_reading() and not self.read_paused:
            self.transport.resume_reading()
        state = self.server_state
        state.connections.add(self)
        self.inbox.put({"type": "websocket.connect"})
        state.start_task(self._loop, self._run_app())

    async def _run_app(self) -> None:
        app = self.server_state.app
        if app is None:
            raise RuntimeError("the serving state has no app")
        try:
            await app(self.scope, self.inbox.get, self.send)
        except ClientDisconnected:
            self._app_finished("")
        except asyncio.CancelledError:
            if self.phase is Phase.CLOSING:
                self.close_transport()  # let the close frame already written go out
            else:
                self.abort()
            raise
        except Exception:
            logger.error("Exception in ASGI application\n", exc_info=True)
            self._app_finished("failed")
        else:
            self._app_finished("returned")

    def _app_finished(self, how: str) -> None:
        """Settle the connection the app left: 500 before accept, close after it."""
        phase = self.phase
        if phase is Phase.HANDSHAKE:
            if how == "returned":
                logger.error("ASGI callable returned without sending handshake.")
            self._refuse(500)
        elif phase is Phase.RESPONDING:
            if how == "returned":
                logger.error("ASGI callable returned without completing its denial response.")
            self.abort()
        elif phase is Phase.OPEN:
            self._start_close(CloseCode.INTERNAL_ERROR if how == "failed" else 1000, "")
        elif phase is Phase.CLOSING and self._shut_down:
            # The server stops right after its apps: send the close frame and end TCP now
            # rather than wait for an echo that would arrive after the loop has gone.
            self.close_transport()

    # --- ConnectionProtocol ----------------------------------------------------------------
    def start_drain(self) -> None:
        """Nothing to do until the drain deadline: a WebSocket has no request boundary."""

    def shutdown_now(self, reason: ShutdownReason) -> None:
        """The drain deadline arrived: close with 1001 (stop) or 1012 (restart)."""
        code = reason.ws_close_code
        phase = self.phase
        self._shut_down = True
        if phase is Phase.OPEN:
            self._start_close(code, "")
            self.inbox.clear()  # no time left to process them: the disconnect goes first
            self.inbox.finish(code, "")
        elif phase is Phase.HANDSHAKE:
            self._refuse(503)
        elif phase is Phase.RESPONDING:
            self.abort()

    # --- asyncio.Protocol ------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        phase = self.phase
        if phase is not Phase.OPEN and phase is not Phase.CLOSING:
            if phase is not Phase.CLOSED:
                self._hold(data)
            return
        ws = self.ws
        events = ws.receive_data(data)
        if events:
            self._handle(events)
        if ws.writes:
            if len(self.inbox) and ws.eof_sent and ws.close_rcvd is None and not ws.extensions:
                # The peer broke the protocol right behind messages the app has not taken
                # yet: let the app take (and answer) them first; the failure goes out next.
                if not self._failing:
                    self._failing = True
                    self._loop.call_soon(self._flush_failure)
            else:
                self._flush()

    def _flush_failure(self) -> None:
        self._failing = False
        if not self.gone:
            self._flush()

    def eof_received(self) -> bool | None:
        if self.phase is Phase.OPEN or self.phase is Phase.CLOSING:
            self.ws.receive_eof()
            self._flush()
        return None  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport_lost()
        accepted = self.phase is Phase.OPEN or self.phase is Phase.CLOSING
        if self.phase is not Phase.CLOSED:
            self._move(Phase.CLOSED)
        self.keepalive.release()
        if self._close_handle is not None:
            self._close_handle.cancel()
            self._close_handle = None
        self.inbox.finish(CloseCode.ABNORMAL_CLOSURE, "")
        self.server_state.connections.discard(self)
        self.server_state.notify_change()
        if accepted:
            logger.info("connection closed")

    # --- ASGI (receive is inbox.get) -----------------------------------------------------
    async def send(self, message: Message) -> None:
        """Carry out one app message; raises ClientDisconnected once the peer is gone."""
        kind = message["type"]
        if self.phase is Phase.OPEN:
            if kind == "websocket.send":
                if self.write_paused:
                    await self.drain()
                    if self.phase is not Phase.OPEN:
                        raise ClientDisconnected("WebSocket closed while waiting to send")
                text = message.get("text")
                if text is not None:
                    self.transport.write(self.ws.message_frame(True, text.encode()))
                else:
                    payload = message.get("bytes")
                    if payload is None:
                        raise RuntimeError("websocket.send needs 'text' or 'bytes'")
                    self.transport.write(self.ws.message_frame(False, payload))
            elif kind == "websocket.close":
                self._start_close(message.get("code") or 1000, message.get("reason") or "")
            else:
                raise RuntimeError(f"Unexpected ASGI message {kind!r} on an open WebSocket")
        elif self.phase is Phase.HANDSHAKE:
            self._handshake_message(kind, message)
        elif self.phase is Phase.RESPONDING:
            if kind != "websocket.http.response.body":
                raise RuntimeError(f"Expected 'websocket.http.response.body', got {kind!r}")
            self._denial_body(message)
        elif kind == "websocket.close":
            return  # already closing or closed: closing again is a no-op
        elif kind in ("websocket.send", "websocket.accept") or kind.startswith("websocket.http"):
            raise ClientDisconnected(f"WebSocket is {self.phase.value}; cannot send {kind!r}")
        else:
            raise RuntimeError(f"Unexpected ASGI message {kind!r}")

    # --- frames ----------------------------------------------------------------------------
    def _handle(self, events: list[Any]) -> None:
        """Messages to the inbox, the peer's close to the app, pongs to the keepalive."""
        inbox = self.inbox
        for event in events:
            kind = type(event)
            if kind is dict:
                inbox.put(event)
            elif kind is Close:
                if self.phase is Phase.OPEN:
                    self._move(Phase.CLOSING)
                inbox.finish(event.code, event.reason)
            else:
                self.keepalive.pong(event.data)

    def _flush(self) -> None:
        for data in self.ws.data_to_send():
            if data:
                self.transport.write(data)
            else:
                self._end_stream()

    def _end_stream(self) -> None:
        """The protocol is done with the stream: half-close, then wait for the peer's FIN."""
        if self.phase is Phase.OPEN:
            self._move(Phase.CLOSING)
        ws = self.ws
        close = ws.close_rcvd or ws.close_sent
        if close is not None:
            self.inbox.finish(close.code, close.reason)
        else:
            self.inbox.finish(CloseCode.ABNORMAL_CLOSURE, "")
        self.keepalive.stop()
        if self.transport.can_write_eof() and not self.transport.is_closing():
            self.transport.write_eof()
        else:
            self.close_transport()
        self._arm_close_timer()

    def _start_close(self, code: int, reason: str) -> None:
        if self._failing:
            return  # the protocol's own close is about to go out
        try:
            self.ws.send_close(code, reason)
        except ValueError as exc:
            raise RuntimeError(f"invalid websocket.close ({code}, {reason!r}): {exc}") from None
        self._move(Phase.CLOSING)
        self.keepalive.stop()
        self._flush()
        self._arm_close_timer()

    def _arm_close_timer(self) -> None:
        """Bound the close handshake: a peer that neither answers nor closes TCP is reset."""
        if self._close_handle is None and not self.gone:
            self._close_handle = self._loop.call_later(CLOSE_TIMEOUT, self.abort)

    # --- keepalive -------------------------------------------------------------------------
    def _send_ping(self, payload: bytes) -> None:
        if self.phase is Phase.OPEN:
            self.ws.send_ping(payload)
            self._flush()

    def _ping_timed_out(self) -> None:
        if self.phase is Phase.OPEN:
            message = "WebSocket keepalive ping timed out; closing %s"
            client_log(Kind.WS_PING_TIMEOUT, logging.INFO, message, self.client_text)
            self.ws.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            self._flush()
