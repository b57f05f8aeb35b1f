"""Shared fixtures: a real corral Server on 127.0.0.1 port 0, run in a background thread.

``http_server`` is parametrized over both event loops and both parsers. Calling it starts
a server for an app and returns a :class:`Running` handle; every server still running at the
end of the test is stopped against a deadline. :class:`RawClient` speaks HTTP/1.1 over a
plain socket for wire-level tests (pipelining, framing, timeouts).
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from corral.config import Config
from corral.worker.clientlog import client_log
from corral.worker.serving import Server
from hypothesis.configuration import set_hypothesis_home_dir

# Hypothesis keeps its example database and caches in .hypothesis/ under the working
# directory; the top of the checkout has a fixed layout, so they live in the temp dir.
set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "corral-hypothesis"))

#: Generous upper bound for anything a test waits for; tests finish far sooner.
DEADLINE = 10.0

STACKS = [
    ("asyncio", "httptools"),
    ("asyncio", "h11"),
    ("uvloop", "httptools"),
    ("uvloop", "h11"),
]


def wait_for(condition: Callable[[], Any], timeout: float = DEADLINE, message: str = "") -> Any:
    """Poll ``condition`` until it returns something truthy, failing after ``timeout``."""
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {message or condition}")
        time.sleep(0.002)


class FakeTransport(asyncio.Transport):
    """The one stand-in transport of the sans-I/O protocol tests: it records what a
    connection does to it (writes, pauses, closes) and takes every write at once.

    ``buffered`` is what ``get_write_buffer_size`` reports; ``calls`` lists the pause,
    resume and abort calls in order; with a ``protocol`` set (``set_protocol``), ``abort``
    tells it the connection is lost, as a real transport does.
    """

    def __init__(self, extra: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.extra = {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}
        self.extra.update(extra or {})
        self.written = bytearray()
        self.writes: list[bytes] = []
        self.calls: list[str] = []
        self.reading = True
        self.pauses = 0
        self.closed = False
        self.eof_written = False
        self.buffered = 0
        self.protocol: Any = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.calls.append("abort")
        self.closed = True
        if self.protocol is not None:
            self.protocol.connection_lost(None)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def is_reading(self) -> bool:
        return self.reading

    def pause_reading(self) -> None:
        self.calls.append("pause")
        self.reading = False
        self.pauses += 1

    def resume_reading(self) -> None:
        self.calls.append("resume")
        self.reading = True

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def get_write_buffer_size(self) -> int:
        return self.buffered


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop
    return asyncio.new_event_loop()


@dataclass
class Running:
    """A server running in its own thread and loop."""

    server: Server
    sock: socket.socket
    thread: threading.Thread | None = None
    loop: asyncio.AbstractEventLoop | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def connections(self) -> list[Any]:
        return list(self.server.state.connections)

    def call(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the server's loop."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(fn)

    def stop(self, *, immediate: bool = False, timeout: float = DEADLINE) -> None:
        self.server.request_stop(immediate=immediate)
        if self.thread is not None:
            self.thread.join(timeout)
            if self.thread.is_alive():
                raise AssertionError("server did not stop within the deadline")


def start_server(
    app: Any, loop_kind: str, http_kind: str, *, wait: bool = True, **settings: Any
) -> Running:
    """Start ``app`` on a fresh 127.0.0.1:0 socket in a thread; wait until it serves."""
    settings.setdefault("lifespan", "off")
    config = Config(app=app, loop=loop_kind, http=http_kind, **settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    running = Running(Server(config, app), sock)

    def main() -> None:
        loop = new_loop(loop_kind)
        running.loop = loop
        try:
            loop.run_until_complete(running.server.serve([sock], running.ready.set))
        except BaseException as exc:
            running.error = exc
        finally:
            running.ready.set()
            loop.close()
            sock.close()

    running.thread = threading.Thread(target=main, name="corral-test-server", daemon=True)
    running.thread.start()
    if wait:
        if not running.ready.wait(DEADLINE):
            raise AssertionError("server did not start within the deadline")
        if running.error is not None:
            raise running.error
    return running


@pytest.fixture(autouse=True)
def fresh_client_log() -> None:
    """Each test starts with the whole budget of client-caused log lines (see clientlog)."""
    client_log.reset()


@pytest.fixture(params=STACKS, ids=["-".join(s) for s in STACKS])
def stack(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(loop, http) implementation pair."""
    pair: tuple[str, str] = request.param
    return pair


@pytest.fixture
def http_server(stack: tuple[str, str]) -> Iterator[Callable[..., Running]]:
    """Factory: ``http_server(app, **settings)`` starts a server; all are stopped after."""
    running: list[Running] = []

    def start(app: Any, **settings: Any) -> Running:
        server = start_server(app, stack[0], stack[1], **settings)
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop()


class RawClient:
    """A plain-socket HTTP/1.1 client reading responses off one connection."""

    def __init__(self, port: int, timeout: float = DEADLINE) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = bytearray()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        data = self.sock.recv(262144)
        if not data:
            return False
        self.buf += data
        return True

    def read_until(self, marker: bytes) -> bytes:
        start = 0
        while (index := self.buf.find(marker, start)) < 0:
            start = max(0, len(self.buf) - len(marker))
            if not self._fill():
                raise EOFError(f"connection closed before {marker!r}; got {bytes(self.buf)!r}")
        return self._take(index + len(marker))

    def read_exact(self, size: int) -> bytes:
        while len(self.buf) < size:
            if not self._fill():
                raise EOFError(f"connection closed after {len(self.buf)} of {size} bytes")
        return self._take(size)

    def read_to_eof(self) -> bytes:
        while self._fill():
            pass
        return self._take(len(self.buf))

    def _take(self, size: int) -> bytes:
        out = bytes(self.buf[:size])
        del self.buf[:size]
        return out

    def is_closed(self) -> bool:
        """True once the server closed the connection (waits for EOF or data)."""
        if self.buf:
            return False
        try:
            return not self._fill()
        except ConnectionResetError:
            return True

    def read_response(self, *, head_request: bool = False) -> Response:
        """Read one response, framed by Content-Length, chunked, or close."""
        head = self.read_until(b"\r\n\r\n").decode("latin-1")
        status_line, *lines = head[:-4].split("\r\n")
        headers: list[tuple[str, str]] = []
        for line in lines:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
        response = Response(int(status_line.split()[1]), headers)
        if head_request or response.status in (204, 304) or response.status < 200:
            return response
        if response.header("transfer-encoding") == "chunked":
            pieces = []
            while True:
                size = int(self.read_until(b"\r\n")[:-2].split(b";")[0], 16)
                if size == 0:
                    self.read_until(b"\r\n")
                    break
                pieces.append(self.read_exact(size))
                self.read_exact(2)
            response.body = b"".join(pieces)
        elif response.header("content-length") is not None:
            response.body = self.read_exact(int(response.header("content-length") or 0))
        else:
            response.body = self.read_to_eof()
        return response


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


def get(path: str = "/", host: bytes = b"t", extra: bytes = b"") -> bytes:
    """A minimal raw GET request."""
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: " + host + b"\r\n" + extra + b"\r\n"
