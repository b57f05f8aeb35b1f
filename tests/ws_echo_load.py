"""WebSocket echo throughput, corral vs uvicorn, with a load client light enough that the
server is the bottleneck. Run by hand (not collected by pytest):

    python tests/ws_echo_load.py --venv /tmp/perf/venv --rounds 5 --duration 4

It has the shape of ../shared/bench's ws-echo: 32 connections, one 32-byte text message in
flight on each, server pinned to cpu 0, client to cpu 1. That harness's client is built on
the websockets library and fills its core before either server does, so its ratio says
little about the servers. This client is raw asyncio protocols sending one pre-built masked
frame. It is a load tool, not a conforming client: it keeps one mask key per process.
Prints each round and the paired median ratio corral/uvicorn.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import cast

BENCH = Path(__file__).resolve().parent.parent.parent / "shared" / "bench"
CONNECTIONS = 32
SIZE = 32
SERVERS = {
    "uvicorn": "{bin}/uvicorn apps:ws_echo --host 127.0.0.1 --port {port} --http httptools "
    "--loop uvloop --no-access-log --log-level warning",
    "corral": "{bin}/corral apps:ws_echo --host 127.0.0.1 --port {port} --no-access-log "
    "--log-level warning",
}


class EchoConnection(asyncio.Protocol):
    """One connection: upgrade, then send the frame again each time its echo is back."""

    def __init__(self, frame: bytes, stopped: list[bool]) -> None:
        self.frame = frame
        self.stopped = stopped
        self.buffer = b""
        self.count = 0
        self.upgraded = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; they have its methods.
        self.transport = cast(asyncio.Transport, transport)
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            "GET / HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded.done():
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                self.buffer = self.buffer[end + 4 :]
                self.upgraded.set_result(None)
            return
        reply = 2 + SIZE  # the server's unmasked frame: 2 header bytes + payload
        while len(self.buffer) >= reply:
            self.buffer = self.buffer[reply:]
            self.count += 1
            if not self.stopped[0] and self.transport is not None:
                self.transport.write(self.frame)


async def run_client(port: int, duration: float) -> dict[str, float]:
    mask = os.urandom(4)
    payload = bytes(byte ^ mask[i % 4] for i, byte in enumerate(b"x" * SIZE))
    frame = bytes([0x81, 0x80 | SIZE]) + mask + payload
    loop = asyncio.get_running_loop()
    stopped = [False]
    connections = []
    for _ in range(CONNECTIONS):
        _, protocol = await loop.create_connection(
            lambda: EchoConnection(frame, stopped), "127.0.0.1", port
        )
        connections.append(protocol)
    await asyncio.wait_for(asyncio.gather(*(c.upgraded for c in connections)), 10)
    started = time.perf_counter()
    for connection in connections:
        assert connection.transport is not None
        connection.transport.write(frame)
    await asyncio.sleep(duration)  # the measurement window itself, not a wait for an event
    stopped[0] = True
    elapsed = time.perf_counter() - started
    total = sum(c.count for c in connections)
    for connection in connections:
        if connection.transport is not None:
            connection.transport.close()
    return {"messages": total, "msg_per_s": total / elapsed}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def one_round(name: str, venv: str, duration: float) -> float:
    port = free_port()
    command = SERVERS[name].format(bin=f"{venv}/bin", port=port).split()
    server = subprocess.Popen(["taskset", "-c", "0", *command], cwd=BENCH)
    try:
        deadline = time.monotonic() + 15
        while True:  # poll until it accepts connections, bounded by the deadline
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"{name} did not start") from None
                time.sleep(0.02)
        client = [sys.executable, __file__, "--client", str(port), "--duration", str(duration)]
        output = subprocess.run(
            ["taskset", "-c", "1", *client], capture_output=True, text=True, check=True
        ).stdout
        rate: float = json.loads(output.strip().splitlines()[-1])["msg_per_s"]
        return rate
    finally:
        server.terminate()
        server.wait(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", default="/tmp/perf/venv", help="venv with both servers")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--client", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        import uvloop

        print(json.dumps(uvloop.run(run_client(args.client, args.duration))))
        return
    rates: dict[str, list[float]] = {name: [] for name in SERVERS}
    for round_number in range(args.rounds):
        order = list(SERVERS)
        random.shuffle(order)
        for name in order:
            rate = one_round(name, args.venv, args.duration)
            rates[name].append(rate)
            print(f"round {round_number} {name:8} {rate:10,.0f} msg/s", flush=True)
    ratios = [c / u for c, u in zip(rates["corral"], rates["uvicorn"], strict=True)]
    print(f"paired ratio corral/uvicorn: median {statistics.median(ratios):.3f}", end=" ")
    print(f"({', '.join(f'{r:.3f}' for r in ratios)})")


if __name__ == "__main__":
    main()
