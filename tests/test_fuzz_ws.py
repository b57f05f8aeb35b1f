"""Seeded mutation fuzzing of WebSocket frames through the full server.

Each connection makes a valid handshake (offering permessage-deflate on some), then sends
frames built from valid ones and mutated: reserved bits, unknown opcodes, unmasked frames,
lengths that lie, oversized or fragmented control frames, stray continuations, bad UTF-8,
bad close codes, garbage bytes, truncation. Whatever arrives, the server must answer with
well-formed frames only (an echo, a pong, or a close with a valid code), log no error or
traceback, and release every connection. Seeds as in :mod:`tests.fuzzing`.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import struct

import pytest

from tests.conftest import STACKS, start_server
from tests.fuzzing import LONG, fuzz_seed, run_campaign
from tests.ws_apps import echo

COUNT = 20_000 if LONG else 300  # connections per (loop, parser) stack
CONCURRENCY = 16
IDLE = 0.25  # no byte for this long: the server is waiting for more of a frame
DEADLINE = 10.0  # a connection that neither closes nor goes quiet by then is a hang
MAX_SIZE = 4096  # --ws-max-size, small so that 1009 is reached often
#: Close codes that may appear on the wire (RFC 6455 §7.4, the IANA registry up to 1014,
#: and 3000-4999 for libraries and apps); a server echoing the client's code may send any.
WIRE_CODES = {1000, 1001, 1002, 1003, *range(1007, 1015), *range(3000, 5000)}
#: A fixed masking key keeps every run of a seed byte-identical (the server can't tell).
MASK_KEY = b"\x37\xfa\x21\x3d"
#: Not UTF-8: a lone byte, a bad continuation, a surrogate, a code point past U+10FFFF.
BAD_UTF8 = [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"a\xf4\x90\x80\x80"]
#: Close codes a client may not send (reserved, or never on the wire).
BAD_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535]


# --- building frames ---------------------------------------------------------------------
def encode(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    declared: int | None = None,
) -> bytes:
    """One client frame; ``declared`` overrides the length field (a lie)."""
    size = len(payload) if declared is None else declared
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if masked else 0
    if size < 126:
        head += bytes([mask_bit | size])
    elif size < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", size)
    if not masked:
        return head + payload
    key = MASK_KEY
    repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
    return head + key + bytes(a ^ b for a, b in zip(payload, repeated, strict=True))


def text(rng: random.Random) -> bytes:
    return "".join(rng.choice("aé€😀 z") for _ in range(rng.randrange(40))).encode()


def script(rng: random.Random) -> list[bytes]:
    """A valid exchange: messages (some fragmented, with pings between), maybe a close."""
    frames: list[bytes] = []
    for _ in range(rng.randrange(1, 4)):
        kind = rng.randrange(5)
        if kind == 0:
            frames.append(encode(0x1, text(rng)))
        elif kind == 1:
            frames.append(encode(0x2, rng.randbytes(rng.randrange(300))))
        elif kind == 2:
            data = text(rng)
            cut = rng.randrange(len(data) + 1)  # may split a UTF-8 sequence: that is valid
            frames += [
                encode(0x1, data[:cut], fin=False),
                encode(0x9, b"p"),
                encode(0x0, data[cut:]),
            ]
        elif kind == 3:
            frames.append(encode(0x9, rng.randbytes(rng.randrange(126))))
        else:
            frames.append(encode(0xA, b"unsolicited"))
    if rng.random() < 0.3:
        frames.append(encode(0x8, struct.pack("!H", 1000) + b"bye"))
    return frames


def broken(rng: random.Random) -> bytes:
    """One frame that breaks a rule of RFC 6455 (or, for some, only a limit)."""
    kind = rng.randrange(12)
    if kind == 0:
        return encode(rng.choice([0x1, 0x2]), b"x", rsv=rng.randrange(1, 8))
    if kind == 1:
        return encode(rng.choice([3, 4, 5, 6, 7, 11, 12, 13, 14, 15]), b"x")
    if kind == 2:
        return encode(0x1, b"hello", masked=False)
    if kind == 3:
        return encode(0x9, b"p" * rng.randrange(126, 300))  # control frame over 125 bytes
    if kind == 4:
        return encode(0x9, b"p", fin=False)  # fragmented control frame
    if kind == 5:
        return encode(0x0, b"stray continuation")
    if kind == 6:
        return encode(0x1, b"start", fin=False) + encode(0x2, b"not a continuation")
    if kind == 7:
        return encode(0x1, rng.choice(BAD_UTF8))
    if kind == 8:
        code = rng.choice(BAD_CODES)
        return encode(0x8, struct.pack("!H", code) if rng.random() < 0.8 else b"\x03")
    if kind == 9:
        return encode(0x8, struct.pack("!H", 1000) + b"\xff\xfe")  # reason not UTF-8
    if kind == 10:
        return encode(0x2, b"y" * (MAX_SIZE + 1 + rng.randrange(1000)))  # over --ws-max-size
    return encode(0x2, b"z", declared=rng.choice([2**16, 2**31, 2**63 - 1]))  # huge claim


def mutate(rng: random.Random, frames: list[bytes]) -> bytes:
    """Frames with zero to three faults: broken frames, garbage, a cut, a flipped byte."""
    frames = list(frames)
    for _ in range(rng.randrange(4)):
        fault = rng.randrange(4)
        where = rng.randrange(len(frames) + 1)
        if fault == 0:
            frames.insert(where, broken(rng))
        elif fault == 1:
            frames.insert(where, rng.randbytes(rng.randrange(1, 12)))
        elif fault == 2 and frames:
            index = min(where, len(frames) - 1)
            frames[index] = frames[index][: rng.randrange(len(frames[index]) + 1)]
        elif frames:
            index = min(where, len(frames) - 1)
            data = bytearray(frames[index])
            if data:
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            frames[index] = bytes(data)
    return b"".join(frames)


# --- checking what the server sends ----------------------------------------------------------
def split_frames(data: bytes) -> tuple[list[tuple[int, int, bytes]], int]:
    """The complete frames at the start of ``data`` (first byte, second byte, payload),
    and the offset where they end."""
    frames: list[tuple[int, int, bytes]] = []
    pos = 0
    while len(data) - pos >= 2:
        b1, b2 = data[pos], data[pos + 1]
        size, start = b2 & 0x7F, pos + 2
        if size >= 126:
            width = 2 if size == 126 else 8
            if len(data) < start + width:
                break
            size = int.from_bytes(data[start : start + width], "big")
            start += width
        if len(data) < start + size:
            break
        frames.append((b1, b2, data[start : start + size]))
        pos = start + size
    return frames, pos


def check_frames(data: bytes, deflate: bool) -> int | None:
    """Validate the server's frames; the close code it sent (1005 for none in the frame)."""
    frames, end = split_frames(data)
    assert end == len(data), f"truncated frame: {data[end:]!r}"
    for index, (b1, b2, payload) in enumerate(frames):
        opcode, rsv = b1 & 0x0F, (b1 >> 4) & 0x07
        assert not b2 & 0x80, "server frames are never masked"
        assert rsv in ((0, 4) if deflate else (0,)), f"reserved bits {rsv} set"
        assert opcode in (0x0, 0x1, 0x2, 0x8, 0x9, 0xA), f"opcode {opcode}"
        if opcode >= 0x8:
            assert b1 & 0x80 and len(payload) <= 125, "bad control frame"
        if opcode == 0x8:
            assert index == len(frames) - 1, "frames after the close frame"
            if not payload:
                return 1005
            assert len(payload) >= 2, "one-byte close payload"
            code = int.from_bytes(payload[:2], "big")
            assert code in WIRE_CODES, f"close code {code}"
            payload[2:].decode("utf-8")  # the reason must be UTF-8
            return code
    return None


def handshake(deflate: bool) -> bytes:
    key = base64.b64encode(os.urandom(16))
    extension = b"Sec-WebSocket-Extensions: permessage-deflate\r\n" if deflate else b""
    return (
        b"GET /fuzz HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n" + extension + b"\r\n"
    )


async def probe(port: int, deflate: bool, data: bytes) -> str:
    """Handshake, send ``data``, check every reply; how the connection ended."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(handshake(deflate))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
        assert head.startswith(b"HTTP/1.1 101 "), head
        negotiated = b"permessage-deflate" in head.lower()
        writer.write(data)
        received = b""
        ending = "waiting"
        code = None
        async with asyncio.timeout(DEADLINE):
            while True:
                try:
                    chunk = await asyncio.wait_for(reader.read(65536), IDLE)
                except TimeoutError:
                    break
                except ConnectionResetError:
                    ending = "reset"
                    break
                if not chunk:
                    ending = "eof"
                    break
                received += chunk
                if code is None and split_frames(received)[1] == len(received):
                    code = check_frames(received, negotiated)
                    if code is not None:  # answer the close: the server then hangs up
                        writer.write(encode(0x8, b""))
        check_frames(received, negotiated)
        return ending if code is None else f"close-{code}-{ending}"
    finally:
        writer.close()


async def fuzz(port: int, rng: random.Random, count: int) -> dict[str, int]:
    cases = [(rng.random() < 0.3, mutate(rng, script(rng))) for _ in range(count)]
    tally: dict[str, int] = {}

    async def worker() -> None:
        while cases:
            deflate, data = cases.pop()
            try:
                outcome = await probe(port, deflate, data)
            except AssertionError as exc:
                raise AssertionError(f"{exc} (deflate={deflate}) for {data!r}") from exc
            tally[outcome] = tally.get(outcome, 0) + 1

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return tally


@pytest.mark.timeout(7200 if LONG else 120)
@pytest.mark.parametrize("stack", STACKS, ids=["-".join(s) for s in STACKS])
def test_fuzz_websocket_frames(stack: tuple[str, str], caplog: pytest.LogCaptureFixture) -> None:
    """Mutated frame streams: well-formed answers only, no error logged, nothing leaked."""
    seed = fuzz_seed()
    print(f"fuzz seed (websocket, {'-'.join(stack)}): {seed}, {COUNT} connections")
    running = start_server(echo, *stack, ws_max_size=MAX_SIZE, log_level="warning")
    try:
        tally = run_campaign(running, fuzz(running.port, random.Random(seed), COUNT), caplog)
        # Both protocol errors and clean closes were reached, so the mutations bite.
        assert tally.get("close-1002-eof", 0) and tally.get("close-1000-eof", 0), tally
    finally:
        running.stop()
