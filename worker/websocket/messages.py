"""WebSocket data frames to ASGI messages, free of I/O.

A fragmented message arrives as frames: this reassembles it (any number of fragments; only
the total size is limited, by the frame protocol's ``max_size``) and validates text as UTF-8
incrementally, so an invalid byte fails the connection at the fragment that carries it
rather than at the end of the message.
"""

from __future__ import annotations

import codecs
import struct
from typing import Any

from websockets.frames import BINARY, CONT, TEXT, Frame

_Utf8Decoder = codecs.getincrementaldecoder("utf-8")

#: First byte of a final, unfragmented text / binary frame without extension bits.
FIN_TEXT = 0x81
FIN_BINARY = 0x82
_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


def server_frame(first_byte: int, payload: bytes | bytearray | memoryview) -> bytes:
    """A complete unmasked frame (RFC 6455 5.2): the hot path of ``websocket.send``."""
    n = len(payload)
    if n < 126:
        return _SHORT.pack(first_byte, n) + payload
    if n < 65536:
        return _MEDIUM.pack(first_byte, 126, n) + payload
    return _LONG.pack(first_byte, 127, n) + payload


class MessageAssembler:
    """Feed data frames in order; get a ``websocket.receive`` message at each message end.

    Raises UnicodeDecodeError as soon as text stops being valid UTF-8 (close code 1007).
    The protocol has already rejected out-of-order frames (a continuation without a start,
    a new message inside a fragmented one), so the assembler can trust the sequence.
    """

    __slots__ = ("_decoder", "_parts")

    def __init__(self) -> None:
        self._parts: list[Any] = []
        self._decoder: codecs.IncrementalDecoder | None = None

    @property
    def in_message(self) -> bool:
        """Whether a fragmented message has started and not yet ended."""
        return bool(self._parts)

    def feed(self, frame: Frame) -> dict[str, Any] | None:
        """The complete message ending with this frame, or None while fragments remain."""
        opcode = frame.opcode
        if opcode is TEXT:
            if frame.fin:
                return {"type": "websocket.receive", "text": str(frame.data, "utf-8")}
            self._decoder = _Utf8Decoder()
            # A marker first, so that an empty first fragment still opens the message.
            self._parts = [""]
            self._parts.append(self._decoder.decode(frame.data, False))
            return None
        if opcode is BINARY:
            if frame.fin:
                return {"type": "websocket.receive", "bytes": bytes(frame.data)}
            self._decoder = None
            self._parts = [b"", bytes(frame.data)]
            return None
        if opcode is not CONT:
            return None  # control frames carry no message data
        decoder = self._decoder
        if decoder is not None:
            self._parts.append(decoder.decode(frame.data, frame.fin))
        else:
            self._parts.append(bytes(frame.data))
        if not frame.fin:
            return None
        parts, self._parts = self._parts, []
        if decoder is not None:
            self._decoder = None
            return {"type": "websocket.receive", "text": "".join(parts)}
        return {"type": "websocket.receive", "bytes": b"".join(parts)}
