"""A closed connection is freed by reference counting, never left to the cycle collector.

Under TLS every connection owns an SSL object, BIOs and read buffers (hundreds of KiB on
asyncio). When a reference cycle keeps a closed connection alive until the next cycle
collection, connection churn leaves hundreds of them in the heap at a time, and the heap
fragments: worker RSS grew 3.5x over 80k TLS connections while nothing leaked
(``tests/bench_faults.py tls-churn`` measures it). So these tests switch the cycle
collector off, close connections in the ways clients close them, and require that no
protocol, flow-control or SSL object is left behind.
"""

from __future__ import annotations

import gc
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme
from corral.worker.http1.protocol import HTTP1Protocol
from corral.worker.websocket.connection import WebSocketConnection
from websockets.sync.client import connect as ws_connect

from tests.conftest import RawClient, Running, get, wait_for
from tests.ws_apps import echo

#: Objects a closed connection must not leave behind (gc-tracked, so a cycle keeps them
#: visible to gc.get_objects() while the collector is off).
CONNECTION_TYPES = (HTTP1Protocol, WebSocketConnection, ssl.SSLObject)


def leftovers() -> list[str]:
    return sorted(type(o).__name__ for o in gc.get_objects() if isinstance(o, CONNECTION_TYPES))


@pytest.fixture
def no_cycle_collector() -> Iterator[None]:
    gc.collect()
    assert not leftovers(), "another test left connections behind"
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, dict[str, str]]:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    root: Path = tmp_path_factory.mktemp("lifetime-pki")
    cert, key = root / "cert.pem", root / "key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    return ca, {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}


def all_closed(running: Running) -> Callable[[], bool]:
    state = running.server.state
    return lambda: not state.connections and not state.tasks and not leftovers()


def close_in_every_way(port: int) -> None:
    """Keep-alive then close, Connection: close, a bad request, a reset mid-body."""
    with RawClient(port) as client:
        client.send(get())
        assert client.read_response().status == 200
        client.send(get(extra=b"Connection: close\r\n"))
        assert client.read_response().status == 200
    with RawClient(port) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
        assert client.read_response().status == 400
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()  # a reset with the body unfinished


def test_plain_connections_are_freed_without_the_collector(
    http_server: Callable[..., Running], no_cycle_collector: None
) -> None:
    running = http_server(echo)
    close_in_every_way(running.port)
    with ws_connect(f"ws://127.0.0.1:{running.port}/") as ws:
        ws.send("hi")
        assert ws.recv() == "hi"
    wait_for(all_closed(running), message=f"closed connections freed, left: {leftovers()}")


def test_tls_connections_are_freed_without_the_collector(
    http_server: Callable[..., Running],
    no_cycle_collector: None,
    tls_files: tuple[trustme.CA, dict[str, str]],
) -> None:
    ca, files = tls_files
    running = http_server(echo, **files)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    for _ in range(3):
        with (
            socket.create_connection(("127.0.0.1", running.port)) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(get(extra=b"Connection: close\r\n"))
            assert tls.recv(1024).startswith(b"HTTP/1.1 200")
    with ws_connect(f"wss://127.0.0.1:{running.port}/", ssl=context) as ws:
        ws.send("hi")
        assert ws.recv() == "hi"
    wait_for(all_closed(running), message=f"closed TLS connections freed, left: {leftovers()}")
