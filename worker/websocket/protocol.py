"""The WebSocket protocol of an accepted connection, free of I/O: bytes in, ASGI messages out.

websockets' sans-I/O ``ServerProtocol`` answers the opening handshake and negotiates the
extensions (:mod:`~corral.worker.websocket.handshake`). From the accept on, frames are
corral's, for two reasons:

- RFC 6455 5.4 lets a close frame arrive between the fragments of a message, where it
  ends the connection normally; websockets fails the connection with 1002 instead (Autobahn
  case 7.1.5), and its frame layer has no public hook to change that;
- the frame layer is the hot path of every message: websockets' generator-based parser
  costs about 2.7 µs per small message here, this one under 1 µs.

What stays websockets': the handshake, the negotiated permessage-deflate extension objects
(their public ``decode``/``encode``) and the ``Frame`` they work on. The closing handshake
follows RFC 6455 7: a close frame is echoed, then the server ends TCP; failing the
connection sends a close frame with the code (unless one went out already) and ends TCP.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any, NamedTuple

from corral.worker.websocket.messages import FIN_BINARY, FIN_TEXT, MessageAssembler, server_frame
from websockets.exceptions import PayloadTooBig, ProtocolError
from websockets.extensions.base import Extension
from websockets.frames import BINARY, CONT, TEXT, Frame

#: Opcodes (RFC 6455 5.2).
_CONT, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_DATA_OPCODES = {_CONT: CONT, _TEXT: TEXT, _BINARY: BINARY}
#: Close codes a peer may send (RFC 6455 7.4.1 and the IANA registry; 3000-4999 are for
#: libraries and applications). 1004-1006 and 1015 never appear on the wire.
_WIRE_CODES = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015)})
#: A close frame's reason fits a control frame's 125 bytes after the 2-byte code.
_MAX_REASON = 123
#: The marker in ``writes`` that the server ends the TCP stream (half-close).
END_OF_STREAM = b""
_CODE = struct.Struct("!H")


class Close(NamedTuple):
    """A close frame's code and reason (1005 when the frame had no code)."""

    code: int
    reason: str


class Pong(NamedTuple):
    """A pong frame arrived (keepalive matches its payload to the ping it sent)."""

    data: bytes


def valid_close_code(code: int) -> bool:
    return code in _WIRE_CODES or 3000 <= code < 5000


def close_payload(code: int, reason: str) -> bytes:
    """The payload of a close frame; ValueError for a code or reason that can't be sent."""
    encoded = reason.encode()
    if not valid_close_code(code):
        raise ValueError(f"close code {code} may not be sent")
    if len(encoded) > _MAX_REASON:
        raise ValueError(f"close reason is {len(encoded)} bytes, more than {_MAX_REASON}")
    return _CODE.pack(code) + encoded


def unmask(payload: bytes | bytearray, key: bytes | bytearray) -> bytes:
    """XOR ``payload`` with the repeated 4-byte masking key (RFC 6455 5.3), in C speed:
    one big-integer XOR instead of a Python loop over the bytes."""
    n = len(payload)
    if not n:
        return b""
    mask = (key * ((n + 3) >> 2))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(n, "big")


class Failure(Exception):
    """The peer broke the protocol: fail the connection with ``code`` (RFC 6455 7.1.7)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class WebSocketProtocol:
    """One accepted server-side connection: parse client frames, frame server messages.

    ``receive_data`` returns the events the bytes completed, in order: ``websocket.receive``
    messages (ASGI dicts, text already checked as UTF-8), :class:`Pong` and one
    :class:`Close`. Whatever must go out (pongs, close frames, and END_OF_STREAM when the
    server ends TCP) collects in ``writes`` until :meth:`data_to_send`.
    """

    __slots__ = (
        "_assembler",
        "_buffer",
        "_deflating",
        "_max_size",
        "_need",
        "_received",
        "close_rcvd",
        "close_sent",
        "discarding",
        "eof_sent",
        "extensions",
        "writes",
    )

    def __init__(self, extensions: Sequence[Extension], max_size: int | None) -> None:
        self.extensions = list(extensions)
        self._deflating = bool(extensions)
        self._max_size = max_size
        self._buffer = bytearray()  # the start of a frame that has not fully arrived
        self._need = 2  # bytes the buffer must hold before parsing is worth trying
        self._received = 0  # size of the fragmented message so far (decoded)
        self._assembler = MessageAssembler()
        self.writes: list[bytes] = []
        self.close_rcvd: Close | None = None
        self.close_sent: Close | None = None
        self.eof_sent = False
        #: A close was received or the connection failed: later bytes are dropped unread.
        self.discarding = False

    # --- receiving ---------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> list[Any]:
        if self.discarding:
            return []
        buffer = self._buffer
        if buffer:
            buffer += data
            if len(buffer) < self._need:
                return []
            data = bytes(buffer)
            buffer.clear()
        events: list[Any] = []
        try:
            end = self._parse(data, events)
        except Failure as failure:
            self.fail(failure.code, failure.reason)
            return events
        if end < len(data) and not self.discarding:
            buffer += data[end:] if end else data
        return events

    def receive_eof(self) -> None:
        """The peer ended its stream: outside a finished close handshake, a failure (1006)."""
        if not self.discarding:
            self.fail(1006, "")

    def _parse(self, data: bytes, events: list[Any]) -> int:
        """Handle every complete frame in ``data``; return where the incomplete rest starts
        (and set ``_need`` to the bytes that rest must reach before it is worth parsing)."""
        pos = 0
        size = len(data)
        while True:
            if size - pos < 2:
                self._need = 2
                return pos
            first = data[pos]
            second = data[pos + 1]
            if not second & 0x80:
                raise Failure(1002, "client frame not masked")
            length = second & 0x7F
            head = pos + 6  # 2 bytes of header, 4 of masking key
            if length >= 126:
                head += 2 if length == 126 else 8
                if size < head:
                    self._need = head - pos
                    return pos
                length = int.from_bytes(data[pos + 2 : head - 4], "big")
                if length >> 63:
                    raise Failure(1002, "frame length has its top bit set")
            opcode = first & 0x0F
            if opcode >= 8:
                if length > 125:
                    raise Failure(1002, "control frame too long")
                if not first & 0x80:
                    raise Failure(1002, "fragmented control frame")
            elif self._max_size is not None and length > self._max_size - self._received:
                raise Failure(1009, "message too big")
            end = head + length
            if size < end:
                self._need = end - pos
                return pos
            self._frame(first, opcode, unmask(data[head:end], data[head - 4 : head]), events)
            pos = end
            if self.discarding:
                return size

    def _frame(self, first: int, opcode: int, payload: bytes, events: list[Any]) -> None:
        fin = bool(first & 0x80)
        if opcode <= _BINARY:
            if first & 0x70 or self._deflating:
                opcode, payload, fin = self._decode(first, opcode, payload)
            assembler = self._assembler
            if opcode == _CONT:
                if not assembler.in_message:
                    raise Failure(1002, "unexpected continuation frame")
            elif assembler.in_message:
                raise Failure(1002, "expected a continuation frame")
            elif fin:  # a whole message in one frame: the common case, without the assembler
                if opcode == _TEXT:
                    events.append({"type": "websocket.receive", "text": self._text(payload)})
                else:
                    events.append({"type": "websocket.receive", "bytes": payload})
                return
            self._received = 0 if fin else self._received + len(payload)
            try:
                message = assembler.feed(Frame(_DATA_OPCODES[opcode], payload, fin))
            except UnicodeDecodeError as exc:
                raise Failure(1007, f"invalid UTF-8 at {exc.start}") from None
            if message is not None:
                events.append(message)
        elif first & 0x70:
            raise Failure(1002, "reserved bits set on a control frame")
        elif opcode == _PING:
            if self.close_sent is None:
                self.writes.append(server_frame(0x80 | _PONG, payload))
        elif opcode == _PONG:
            events.append(Pong(payload))
        elif opcode == _CLOSE:
            self._close_received(payload, events)
        else:
            raise Failure(1002, f"invalid opcode {opcode:#x}")

    def _decode(self, first: int, opcode: int, payload: bytes) -> tuple[int, bytes, bool]:
        """Run a data frame through the negotiated extensions (permessage-deflate)."""
        if not self._deflating:
            raise Failure(1002, "reserved bits set without an extension")
        frame = Frame(
            _DATA_OPCODES[opcode],
            payload,
            bool(first & 0x80),
            bool(first & 0x40),
            bool(first & 0x20),
            bool(first & 0x10),
        )
        limit = None if self._max_size is None else self._max_size - self._received
        try:
            for extension in reversed(self.extensions):
                frame = extension.decode(frame, max_size=limit)
        except PayloadTooBig:
            raise Failure(1009, "message too big") from None
        except ProtocolError as exc:
            raise Failure(1002, str(exc)) from None
        if frame.rsv1 or frame.rsv2 or frame.rsv3:
            raise Failure(1002, "reserved bits set")
        return int(frame.opcode), bytes(frame.data), frame.fin

    @staticmethod
    def _text(payload: bytes) -> str:
        try:
            return str(payload, "utf-8")
        except UnicodeDecodeError as exc:
            raise Failure(1007, f"invalid UTF-8 at {exc.start}") from None

    def _close_received(self, payload: bytes, events: list[Any]) -> None:
        if len(payload) == 1:
            raise Failure(1002, "close frame too short")
        if payload:
            code = _CODE.unpack_from(payload)[0]
            reason = self._text(payload[2:])
            if not valid_close_code(code):
                raise Failure(1002, f"invalid close code {code}")
        else:
            code, reason = 1005, ""
        self.close_rcvd = received = Close(code, reason)
        # A partial message is abandoned: a close may arrive between fragments (RFC 6455 5.4).
        self._assembler = MessageAssembler()
        if self.close_sent is None:  # echo the peer's close (its payload, byte for byte)
            self.writes.append(server_frame(0x80 | _CLOSE, payload))
            self.close_sent = received
        self._end_stream()
        events.append(received)

    # --- sending ------------------------------------------------------------------------------
    def message_frame(self, text: bool, payload: bytes) -> bytes:
        """One whole-message data frame, compressed when an extension was negotiated."""
        first = FIN_TEXT if text else FIN_BINARY
        if not self._deflating:
            return server_frame(first, payload)
        frame = Frame(TEXT if text else BINARY, payload)
        for extension in self.extensions:
            frame = extension.encode(frame)
        if frame.rsv1:
            first |= 0x40
        return server_frame(first, frame.data)

    def send_ping(self, payload: bytes) -> None:
        if self.close_sent is None:
            self.writes.append(server_frame(0x80 | _PING, payload))

    def send_close(self, code: int, reason: str) -> None:
        """Start the closing handshake (ValueError for a code or reason that can't be sent)."""
        payload = close_payload(code, reason)
        if self.close_sent is None:
            self.writes.append(server_frame(0x80 | _CLOSE, payload))
            self.close_sent = Close(code, reason)

    def fail(self, code: int, reason: str) -> None:
        """Fail the connection: a close frame with ``code`` unless one went out (none for
        1006, the network's failure), then end TCP and ignore whatever else arrives."""
        if self.close_sent is None and code != 1006:
            self.writes.append(server_frame(0x80 | _CLOSE, close_payload(code, reason[:60])))
            self.close_sent = Close(code, reason)
        self._end_stream()

    def _end_stream(self) -> None:
        self.discarding = True
        self._buffer.clear()
        if not self.eof_sent:
            self.eof_sent = True
            self.writes.append(END_OF_STREAM)

    def data_to_send(self) -> list[bytes]:
        writes, self.writes = self.writes, []
        return writes
