"""Slowloris: hundreds of connections trickling a request head must not starve real clients,
and the header timeout (408) must close every trickler, however steadily it trickles."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import DEADLINE, STACKS, Running, start_server, wait_for

TRICKLERS = 300
HEADER_TIMEOUT = 2.0
#: One byte per TRICKLE seconds: far slower than any real client, fast enough that every
#: trickler sends several bytes inside the header timeout (so each byte would reset a
#: naive timer).
TRICKLE = 0.1


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


async def read_response_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


class Trickler:
    """One slow client: optionally one normal request first, then a head byte by byte."""

    def __init__(self, port: int, keep_alive_first: bool) -> None:
        self.port = port
        self.keep_alive_first = keep_alive_first
        self.answer = b""
        self.sent = 0
        self.closed = asyncio.Event()

    async def run(self, started: asyncio.Event) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            if self.keep_alive_first:
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                head = await read_response_head(reader)
                assert head.startswith(b"HTTP/1.1 200"), head
                await reader.readexactly(5)
            await started.wait()
            pending = b"GET /slow HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: y\r\n" * 1000
            read = asyncio.ensure_future(reader.read())
            for byte in pending:
                writer.write(bytes([byte]))
                self.sent += 1
                done, _ = await asyncio.wait({read}, timeout=TRICKLE)
                if done:
                    break
            self.answer = await asyncio.wait_for(read, DEADLINE)
        finally:
            self.closed.set()
            writer.close()


async def normal_request(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return await asyncio.wait_for(reader.read(), DEADLINE)
    finally:
        writer.close()


async def scenario(server: Running) -> None:
    started = asyncio.Event()
    tricklers = [Trickler(server.port, keep_alive_first=i % 2 == 0) for i in range(TRICKLERS)]
    tasks = [asyncio.ensure_future(t.run(started)) for t in tricklers]
    # Every trickler is connected (and half of them have been served once) before the
    # trickling starts.
    await asyncio.to_thread(
        wait_for, lambda: len(server.connections) >= TRICKLERS, message="tricklers to connect"
    )
    started.set()
    while min(t.sent for t in tricklers) < 3:  # every trickler has a few bytes in
        await asyncio.sleep(TRICKLE / 4)
    answer = await normal_request(server.port)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"hello"), answer
    # The normal client was served while the tricklers still held their connections.
    assert sum(t.closed.is_set() for t in tricklers) == 0
    await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE + HEADER_TIMEOUT)
    for trickler in tricklers:
        assert trickler.answer.startswith(b"HTTP/1.1 408"), trickler.answer[:100]
        assert b"connection: close" in trickler.answer.lower()


@pytest.mark.parametrize("stack", STACKS, ids=["-".join(s) for s in STACKS])
def test_slowloris(stack: tuple[str, str]) -> None:
    """A client is served during a slowloris attack; the header timeout closes every trickler."""
    server = start_server(hello, *stack, timeout_request_header=HEADER_TIMEOUT, log_level="warning")
    try:
        asyncio.run(scenario(server))
        wait_for(lambda: not server.connections, message="trickler connections to be released")
    finally:
        server.stop()
