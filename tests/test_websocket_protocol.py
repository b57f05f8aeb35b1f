"""corral's sans-I/O WebSocket frame protocol, without sockets: client frames (built by the
websockets library, as a client would send them) in, events and server bytes out."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from corral.worker.websocket.protocol import (
    END_OF_STREAM,
    Close,
    Pong,
    WebSocketProtocol,
    close_payload,
    unmask,
)
from hypothesis import given
from hypothesis import strategies as st
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import BINARY, CLOSE, CONT, PING, PONG, TEXT, Frame

MAX_SIZE = 1 << 16


def frame(opcode: Any, data: bytes, fin: bool = True) -> bytes:
    """A valid client frame, as the websockets library sends it."""
    return Frame(opcode, data, fin).serialize(mask=True)


def wire(first: int, payload: bytes, masked: bool = True) -> bytes:
    """Any client frame, valid or not: ``first`` is the whole first byte."""
    key = b"\x11\x22\x33\x44"
    n = len(payload)
    length = bytes([n]) if n < 126 else b"\x7e" + struct.pack("!H", n)
    if not masked:
        return bytes([first]) + length + payload
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes([first, length[0] | 0x80]) + length[1:] + key + body


def close_frame(code: int, reason: bytes = b"") -> bytes:
    return frame(CLOSE, struct.pack("!H", code) + reason)


def protocol(**kwargs: Any) -> WebSocketProtocol:
    return WebSocketProtocol(kwargs.pop("extensions", []), kwargs.pop("max_size", MAX_SIZE))


def closed_with(ws: WebSocketProtocol) -> int | None:
    """The code of the close frame the server wrote, checking the stream then ends."""
    out = ws.data_to_send()
    assert out[-1] == END_OF_STREAM and out.count(END_OF_STREAM) == 1
    closes = [data for data in out if data[:1] == b"\x88"]
    if not closes:
        return None
    assert len(closes) == 1
    payload = closes[0][2:]
    return int(struct.unpack("!H", payload[:2])[0]) if payload else 1005


def test_whole_messages() -> None:
    ws = protocol()
    events = ws.receive_data(frame(TEXT, "héllo".encode()) + frame(BINARY, b"\x00\x01"))
    assert events == [
        {"type": "websocket.receive", "text": "héllo"},
        {"type": "websocket.receive", "bytes": b"\x00\x01"},
    ]
    assert ws.data_to_send() == []


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536])
def test_every_length_encoding(size: int) -> None:
    ws = protocol(max_size=None)
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    assert ws.receive_data(frame(BINARY, payload)) == [
        {"type": "websocket.receive", "bytes": payload}
    ]


@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=320), max_size=6))
def test_any_split_of_the_stream(payload: bytes, cuts: list[int]) -> None:
    """However TCP cuts the bytes, the same messages come out, in order."""
    stream = frame(BINARY, payload) + frame(TEXT, b"after") + frame(PING, b"p")
    points = sorted({min(c, len(stream)) for c in cuts})
    ws = protocol()
    events: list[Any] = []
    for a, b in zip([0, *points], [*points, len(stream)], strict=True):
        events += ws.receive_data(stream[a:b])
    assert events == [
        {"type": "websocket.receive", "bytes": payload},
        {"type": "websocket.receive", "text": "after"},
    ]
    assert ws.data_to_send() == [b"\x8a\x01p"]  # the pong


def test_fragments_with_a_ping_between_them() -> None:
    ws = protocol()
    events = ws.receive_data(
        frame(TEXT, b"frag", fin=False) + frame(PING, b"?") + frame(CONT, b"ment")
    )
    assert events == [{"type": "websocket.receive", "text": "fragment"}]
    assert ws.data_to_send() == [b"\x8a\x01?"]


def test_close_between_fragments_ends_normally() -> None:
    """RFC 6455 5.4 (Autobahn 7.1.5): the partial message is dropped, the close echoed."""
    ws = protocol()
    events = ws.receive_data(
        frame(TEXT, b"part", fin=False) + close_frame(1000) + frame(CONT, b"never")
    )
    assert events == [Close(1000, "")]
    assert closed_with(ws) == 1000
    assert ws.receive_data(frame(TEXT, b"late")) == []  # discarded after the close


def test_close_echo_and_end() -> None:
    ws = protocol()
    assert ws.receive_data(close_frame(4000, b"bye")) == [Close(4000, "bye")]
    assert ws.data_to_send() == [b"\x88\x05\x0f\xa0bye", END_OF_STREAM]
    empty = protocol()
    assert empty.receive_data(frame(CLOSE, b"")) == [Close(1005, "")]
    assert empty.data_to_send() == [b"\x88\x00", END_OF_STREAM]


def test_server_initiated_close_waits_for_the_peer() -> None:
    ws = protocol()
    ws.send_close(1001, "restart")
    assert ws.data_to_send() == [b"\x88\x09\x03\xe9restart"]
    assert ws.receive_data(frame(TEXT, b"in flight")) == [
        {"type": "websocket.receive", "text": "in flight"}
    ]
    assert ws.receive_data(close_frame(1001)) == [Close(1001, "")]
    assert ws.data_to_send() == [END_OF_STREAM]  # no second close frame


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (wire(0x81, b"x", masked=False), 1002),  # client frames must be masked
        (wire(0xC1, b"x"), 1002),  # RSV1 without an extension negotiated
        (wire(0x99, b"x"), 1002),  # RSV1 on a control frame
        (wire(0x89, b"x" * 126), 1002),  # control frame too long
        (wire(0x09, b"x"), 1002),  # fragmented control frame
        (frame(CONT, b"x"), 1002),  # continuation without a message
        (frame(TEXT, b"a", fin=False) + frame(BINARY, b"b"), 1002),  # new message inside one
        (wire(0x83, b""), 1002),  # reserved opcode
        (wire(0x8B, b""), 1002),  # reserved control opcode
        (wire(0x81, b"\xff"), 1007),
        (wire(0x01, b"ok") + wire(0x00, b"\xed\xa0\x80"), 1007),  # fails before the end
        (wire(0x88, b"\x03"), 1002),  # a close payload of one byte
        (wire(0x88, b"\x03\xed"), 1002),  # 1005: never on the wire
        (wire(0x88, b"\x0b\xb7"), 1002),  # 2999
        (wire(0x88, b"\x03\xe8\xff"), 1007),  # 1000, reason not UTF-8
        (frame(BINARY, b"x" * (MAX_SIZE + 1)), 1009),
        (frame(BINARY, b"x" * MAX_SIZE, fin=False) + frame(CONT, b"x"), 1009),
    ],
)
def test_protocol_violations_fail_the_connection(data: bytes, code: int) -> None:
    ws = protocol()
    ws.receive_data(data)
    assert closed_with(ws) == code
    assert ws.discarding and ws.receive_data(frame(TEXT, b"more")) == []


def test_oversized_frame_fails_before_its_payload_arrives() -> None:
    ws = protocol()
    head = frame(BINARY, b"x" * (MAX_SIZE + 1))[:14]
    ws.receive_data(head)
    assert closed_with(ws) == 1009


def test_messages_before_a_violation_are_kept() -> None:
    ws = protocol()
    assert ws.receive_data(frame(TEXT, b"first") + frame(CONT, b"x")) == [
        {"type": "websocket.receive", "text": "first"}
    ]
    assert closed_with(ws) == 1002


def test_eof_without_close_is_abnormal() -> None:
    ws = protocol()
    ws.receive_eof()
    assert closed_with(ws) is None  # 1006: nothing is sent but the end of the stream


def test_pong_is_an_event_and_pings_are_framed() -> None:
    ws = protocol()
    assert ws.receive_data(frame(PONG, b"\x00\x00\x00\x01")) == [Pong(b"\x00\x00\x00\x01")]
    ws.send_ping(b"\x00\x00\x00\x02")
    assert ws.data_to_send() == [b"\x89\x04\x00\x00\x00\x02"]


@pytest.mark.parametrize(("code", "reason"), [(1005, ""), (999, ""), (1000, "x" * 124)])
def test_unsendable_close_is_refused(code: int, reason: str) -> None:
    with pytest.raises(ValueError):
        close_payload(code, reason)


def test_message_frames() -> None:
    ws = protocol()
    assert ws.message_frame(True, b"hi") == b"\x81\x02hi"
    assert ws.message_frame(False, b"x" * 200)[:4] == b"\x82\x7e\x00\xc8"


def test_permessage_deflate_both_ways() -> None:
    """With the extension websockets negotiated, compressed frames in and out."""
    client = PerMessageDeflate(False, False, 12, 12)
    ws = protocol(extensions=[PerMessageDeflate(False, False, 12, 12)])
    text = "compress me " * 50
    stream = b"".join(
        Frame(opcode, data, fin).serialize(mask=True, extensions=[client])
        for opcode, data, fin in [
            (TEXT, text.encode(), True),
            (BINARY, b"abc" * 100, False),
            (CONT, b"def" * 100, True),
        ]
    )
    assert len(stream) < 300
    assert ws.receive_data(stream) == [
        {"type": "websocket.receive", "text": text},
        {"type": "websocket.receive", "bytes": b"abc" * 100 + b"def" * 100},
    ]
    out = ws.message_frame(True, text.encode())
    assert out[0] == 0xC1 and out[1] < 126  # FIN, RSV1 (compressed), text; short
    decoded = client.decode(Frame(TEXT, out[2:], rsv1=True))
    assert decoded.data == text.encode()


def test_deflate_bomb_is_too_big() -> None:
    """The limit counts decompressed bytes: a small frame inflating past it is 1009."""
    client = PerMessageDeflate(False, False, 12, 12)
    ws = protocol(extensions=[PerMessageDeflate(False, False, 12, 12)], max_size=1000)
    bomb = Frame(BINARY, bytes(100_000)).serialize(mask=True, extensions=[client])
    assert len(bomb) < 1000
    ws.receive_data(bomb)
    assert closed_with(ws) == 1009


@given(st.binary(max_size=64), st.binary(min_size=4, max_size=4))
def test_unmask_is_its_own_inverse(payload: bytes, key: bytes) -> None:
    masked = unmask(payload, key)
    assert len(masked) == len(payload)
    assert unmask(masked, key) == payload
    assert masked == bytes(b ^ key[i % 4] for i, b in enumerate(payload))
