"""The microbenchmark's WebSocket message case, run by hand: CPU µs per echoed message.

Drives one server's WebSocket protocol with a fake transport on uvloop (no sockets): an
upgraded connection whose app echoes every message receives one masked 32-byte text frame
at a time, and the next goes in once the echo was written. Reports the process CPU time per
message for corral and, when installed, uvicorn (its default ``--ws auto``: the websockets
library's protocol). ``tests/bench_micro.py`` runs it with the HTTP cases; alone:

    .venv/bin/python -m tests.bench_ws [--messages 20000] [--rounds 5]

The ratio within one run is the signal (a few percent); absolute numbers drift with the
machine. Profile with ``py-spy record --native -- python -m tests.bench_ws``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

#: A masked, final, 32-byte text frame, as a browser sends it.
_KEY = b"\x12\x34\x56\x78"
_PAYLOAD = b"x" * 32
FRAME = b"\x81\xa0" + _KEY + bytes(b ^ _KEY[i % 4] for i, b in enumerate(_PAYLOAD))
_WS_KEY = base64.b64encode(os.urandom(16))
UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: " + _WS_KEY + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return
        await send({"type": "websocket.send", "text": message["text"]})


class FakeTransport(asyncio.Transport):
    """Takes every write at once; wakes the driver when a server text frame goes out."""

    def __init__(self) -> None:
        super().__init__()
        self.protocol: Any = None
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False

    def write(self, data: Any) -> None:
        if data[:1] == b"\x81" and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def writelines(self, parts: Any) -> None:
        for part in parts:
            self.write(part)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_reading(self) -> bool:
        return True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.protocol  # type: ignore[no-any-return]


def _corral(transport: FakeTransport) -> None:
    from corral.config import Config
    from corral.worker.state import ServerState
    from corral.worker.websocket.connection import upgrade

    state = ServerState(Config(ws_ping_interval=0, access_log=False), echo)
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (name.lower(), value)
            for name, value in (
                line.split(b": ", 1) for line in UPGRADE.split(b"\r\n")[1:] if b": " in line
            )
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "extensions": {},
    }
    upgrade(state, transport, scope, b"")


def _uvicorn(transport: FakeTransport) -> None:
    """uvicorn's default (``--ws auto``), as the socket harness runs it."""
    import warnings

    from uvicorn.config import Config
    from uvicorn.server import ServerState

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the websockets implementation is deprecated"
        from uvicorn.protocols.websockets.auto import AutoWebSocketsProtocol

    assert AutoWebSocketsProtocol is not None
    config = Config(echo, ws_ping_interval=None, lifespan="off", log_config=None)
    config.load()
    protocol = AutoWebSocketsProtocol(config, ServerState(), {})
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    protocol.data_received(UPGRADE)


SERVERS: dict[str, Callable[[FakeTransport], None]] = {"corral": _corral, "uvicorn": _uvicorn}


async def _run(start: Callable[[FakeTransport], None], messages: int) -> float:
    loop = asyncio.get_running_loop()
    transport = FakeTransport()
    start(transport)
    for _ in range(20):  # the handshake and the app's accept
        await asyncio.sleep(0)
    protocol = transport.protocol
    for _ in range(200):  # warm up
        transport.waiter = loop.create_future()
        protocol.data_received(FRAME)
        await asyncio.wait_for(transport.waiter, 5)
    began = time.process_time()
    for _ in range(messages):
        transport.waiter = waiter = loop.create_future()
        protocol.data_received(FRAME)
        await waiter
    spent = time.process_time() - began
    transport.close()
    protocol.connection_lost(None)
    return spent / messages * 1e6


def websocket_message(server: str, messages: int = 20000) -> float:
    """CPU µs per echoed 32-byte message through ``server``'s protocol ("corral", "uvicorn")."""
    import uvloop

    logging.disable(logging.CRITICAL)  # log lines (open, close, the app's cancellation)
    try:
        return uvloop.run(_run(SERVERS[server], messages))
    finally:
        logging.disable(logging.NOTSET)


def available() -> list[str]:
    try:
        import uvicorn  # noqa: F401
    except ImportError:
        return ["corral"]
    return ["corral", "uvicorn"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    servers = available()
    results: dict[str, list[float]] = {name: [] for name in servers}
    for _ in range(args.rounds):  # interleaved, so drift hits every server alike
        for name in servers:
            results[name].append(websocket_message(name, args.messages))
    for name, values in results.items():
        print(f"websocket message  {name:8} {statistics.median(values):7.2f} µs")
    if "uvicorn" in results:
        ratios = [u / c for c, u in zip(results["corral"], results["uvicorn"], strict=True)]
        print(f"uvicorn / corral CPU per message: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
