"""CPU microseconds per request, with the protocol driven by a fake transport (run by hand).

No sockets and no client: each case feeds request bytes straight into a connection's
``data_received`` on a uvloop loop, runs the loop until the app has answered, and divides
the process CPU time by the number of requests. The median of several repeats is printed
for corral and, when installed, for uvicorn (httptools), with the ratio uvicorn ÷ corral
(above 1: corral is cheaper). Within one run the ratio is stable to a few percent even on a
busy machine, which the socket benchmarks are not.

    python tests/bench_micro.py                  # every case, corral and uvicorn
    python tests/bench_micro.py --case get --repeats 9 --requests 20000
    python tests/bench_micro.py --http h11       # corral --http h11 against uvicorn's h11
    python tests/bench_micro.py --profile get    # cProfile of corral on one case

It is never collected by pytest (the file name does not start with ``test_``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import statistics
import time
from collections.abc import Callable
from typing import Any

GET = b"GET /plaintext HTTP/1.1\r\nHost: localhost\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
GET_CLOSE = GET[:-2] + b"Connection: close\r\n\r\n"
JSON_GET = GET.replace(b"/plaintext", b"/json")
POST_BODY = b"x" * 65536
POST = (
    b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\n"
    b"Content-Length: %d\r\n\r\n" % len(POST_BODY)
) + POST_BODY
STREAM_GET = GET.replace(b"/plaintext", b"/stream")
STREAM_CHUNK = b"s" * 16384
STREAM_CHUNKS = 64  # 1 MiB in 16 KiB chunks, as the socket benchmark streams
WS_UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
_WS_MASK = b"\x12\x34\x56\x78"
#: One masked, final 32-byte text frame from the client (ws-echo-raw's message).
WS_FRAME = b"\x81\xa0" + _WS_MASK + bytes(b ^ _WS_MASK[i % 4] for i, b in enumerate(b"x" * 32))


class Done:
    """How many responses the app has completed (the driver waits on it)."""

    count = 0


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The benchmark app: plaintext, JSON, echo, stream and WebSocket echo, as run_bench's."""
    path = scope["path"]
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message["text"]})
            Done.count += 1
        return
    if path == "/plaintext":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")],
            }
        )
        await send({"type": "http.response.body", "body": b"Hello, World!"})
    elif path == "/json":
        body = json.dumps({"message": "Hello, World!"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
    elif path == "/echo":
        parts = []
        more = True
        while more:
            message = await receive()
            parts.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(parts)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
    elif path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(STREAM_CHUNKS):
            await send({"type": "http.response.body", "body": STREAM_CHUNK, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    Done.count += 1


class FakeTransport(asyncio.Transport):
    """Counts what is written and discards it; looks enough like uvloop's to both servers."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes_out = 0
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return ("127.0.0.1", 40000)
        if name == "sockname":
            return ("127.0.0.1", 8000)
        return default

    def write(self, data: Any) -> None:
        self.bytes_out += len(data)

    def writelines(self, parts: Any) -> None:
        for part in parts:
            self.bytes_out += len(part)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_reading(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    protocol: Any = None  # set when a WebSocket upgrade hands the transport over

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.protocol  # type: ignore[no-any-return]


# --- the servers -------------------------------------------------------------------------
def corral_factory(http: str) -> Callable[[], asyncio.Protocol]:
    from corral.config import Config
    from corral.worker.http1.parsers import ParserLimits
    from corral.worker.http1.protocol import HTTP1Protocol
    from corral.worker.state import ServerState

    config = Config(app=app, lifespan="off", access_log=False, http=http)
    state = ServerState(config, app)
    limits = ParserLimits.from_config(config)
    loop = asyncio.get_running_loop()
    return lambda: HTTP1Protocol(state, limits, loop)


def uvicorn_factory(http: str) -> Callable[[], asyncio.Protocol]:
    import uvicorn
    from uvicorn.server import ServerState

    config = uvicorn.Config(app, lifespan="off", access_log=False, http=http, log_level="error")
    config.load()
    state = ServerState()
    loop = asyncio.get_running_loop()
    protocol_class: Any = config.http_protocol_class
    return lambda: protocol_class(config=config, server_state=state, app_state={}, _loop=loop)


# --- the cases -----------------------------------------------------------------------------
async def _answered(target: int) -> None:
    """Run the loop until the app has completed ``target`` responses."""
    while Done.count < target:
        await asyncio.sleep(0)


async def keep_alive(factory: Callable[[], asyncio.Protocol], request: bytes, n: int) -> float:
    """``n`` requests, one after another, on one connection: CPU seconds."""
    protocol: Any = factory()
    transport = FakeTransport()
    protocol.connection_made(transport)
    await asyncio.sleep(0)
    Done.count = 0
    start = time.process_time()
    for i in range(1, n + 1):
        protocol.data_received(request)
        if Done.count < i:
            await _answered(i)
    spent = time.process_time() - start
    protocol.connection_lost(None)
    return spent


async def new_connections(factory: Callable[[], asyncio.Protocol], request: bytes, n: int) -> float:
    """``n`` connections with one ``Connection: close`` request each: CPU seconds."""
    Done.count = 0
    start = time.process_time()
    for i in range(1, n + 1):
        protocol: Any = factory()
        transport = FakeTransport()
        protocol.connection_made(transport)
        protocol.data_received(request)
        if Done.count < i:
            await _answered(i)
        protocol.connection_lost(None)
    spent = time.process_time() - start
    await asyncio.sleep(0)
    return spent


async def websocket_message(factory: Callable[[], asyncio.Protocol], n: int) -> float:
    """``n`` 32-byte text messages echoed, one at a time, on one upgraded connection: CPU
    seconds. The upgrade goes through the HTTP protocol, as on a socket (not timed)."""
    http: Any = factory()
    transport = FakeTransport()
    http.connection_made(transport)
    http.data_received(WS_UPGRADE)
    for _ in range(20):  # the hand-off, the app's accept and the 101
        await asyncio.sleep(0)
    protocol = transport.protocol
    assert protocol is not None and protocol is not http, "the upgrade was not taken over"
    Done.count = 0
    start = time.process_time()
    for i in range(1, n + 1):
        protocol.data_received(WS_FRAME)
        if Done.count < i:
            await _answered(i)
    spent = time.process_time() - start
    transport.closing = True
    protocol.connection_lost(None)
    await asyncio.sleep(0)
    return spent


CASES: dict[str, tuple[str, int]] = {
    # name: (what it measures, requests per repeat relative to --requests)
    "get": ("keep-alive GET, plaintext", 1),
    "new-connection": ("a new connection per GET", 1),
    "json": ("keep-alive GET, JSON", 1),
    "post-64k": ("64 KiB POST echoed", 8),
    "stream-1m": ("1 MiB streamed in 16 KiB chunks", 32),
    "websocket": ("one WebSocket message echoed", 1),
}


async def run_case(case: str, factory: Callable[[], asyncio.Protocol], n: int) -> float | None:
    if case == "get":
        return await keep_alive(factory, GET, n)
    if case == "new-connection":
        return await new_connections(factory, GET_CLOSE, n)
    if case == "json":
        return await keep_alive(factory, JSON_GET, n)
    if case == "post-64k":
        return await keep_alive(factory, POST, n)
    if case == "stream-1m":
        return await keep_alive(factory, STREAM_GET, n)
    return await websocket_message(factory, n)


async def measure(
    make: Callable[[str], Callable[[], asyncio.Protocol]],
    http: str,
    case: str,
    requests: int,
    repeats: int,
) -> float | None:
    """Median CPU µs per request over ``repeats`` (after one warm-up)."""
    factory = make(http)
    n = max(requests // CASES[case][1], 50)
    await run_case(case, factory, min(n, 500))  # warm-up: caches, first-call paths
    samples = []
    for _ in range(repeats):
        spent = await run_case(case, factory, n)
        if spent is None:
            return None
        samples.append(spent / n * 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", action="append", choices=sorted(CASES))
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--http", default="httptools", choices=["httptools", "h11"])
    parser.add_argument("--profile", choices=sorted(CASES), help="cProfile corral on a case")
    args = parser.parse_args()

    import uvloop

    if args.profile:
        profile(args.profile, args.http, args.requests)
        return
    try:
        import uvicorn  # noqa: F401

        servers = {"corral": corral_factory, "uvicorn": uvicorn_factory}
    except ImportError:
        servers = {"corral": corral_factory}
    cases = args.case or list(CASES)
    print(f"CPU µs per request (median of {args.repeats}; --http {args.http}; uvloop)")
    print(f"{'case':<16}" + "".join(f"{name:>10}" for name in servers) + "     ratio")
    for case in cases:
        row = {}
        for name, make in servers.items():
            row[name] = uvloop.run(measure(make, args.http, case, args.requests, args.repeats))
        cells = "".join(f"{'-' if v is None else f'{v:.1f}':>10}" for v in row.values())
        corral, uvicorn_us = row.get("corral"), row.get("uvicorn")
        ratio = f"{uvicorn_us / corral:.2f}" if corral and uvicorn_us else "-"
        print(f"{case:<16}{cells}{ratio:>10}   {CASES[case][0]}")


def profile(case: str, http: str, requests: int) -> None:
    import uvloop

    async def run() -> None:
        factory = corral_factory(http)
        await run_case(case, factory, 500)
        profiler = cProfile.Profile()
        profiler.enable()
        await run_case(case, factory, requests)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)

    uvloop.run(run())


if __name__ == "__main__":
    main()
