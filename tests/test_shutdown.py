"""Stopping: graceful drain, drain deadline, immediate stop, lame duck, and single-process
signals (a real subprocess running run_single)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from corral.config import Config
from corral.worker.serving import Server

from tests import apps
from tests.apps import Gate
from tests.conftest import DEADLINE, RawClient, get, wait_for

ROOT = Path(__file__).resolve().parent.parent


def test_graceful_shutdown_completes_request_in_flight(http_server):
    """A request in flight when the stop begins still completes (with Connection: close)."""
    gate = Gate()
    server = http_server(apps.gated(gate))
    with RawClient(server.port) as raw:
        raw.send(get("/slow"))
        wait_for(gate.entered.is_set, message="the request to reach the app")
        server.server.request_stop()
        wait_for(lambda: server.server.state.draining, message="the drain to begin")
        gate.open()
        response = raw.read_response()
        assert response.status == 200
        assert response.body == b"done/slow"
        assert response.header("connection") == "close"
        assert raw.is_closed()
    server.thread.join(DEADLINE)
    assert not server.thread.is_alive()


def test_idle_keep_alive_connections_close_at_drain(http_server):
    """Idle keep-alive connections are closed as soon as the drain starts."""
    server = http_server(apps.hello)
    with RawClient(server.port) as raw:
        raw.send(get())
        assert raw.read_response().status == 200
        server.server.request_stop()
        assert raw.is_closed()
    server.thread.join(DEADLINE)
    assert not server.thread.is_alive()


def test_fresh_connection_answered_during_drain(http_server):
    """A connection accepted before the stop but not yet sending still gets its answer."""
    server = http_server(apps.hello, timeout_graceful_shutdown=30)
    with RawClient(server.port) as raw:
        wait_for(lambda: server.connections, message="the connection to be accepted")
        server.server.request_stop()
        wait_for(lambda: server.server.state.draining, message="the drain to begin")
        raw.send(get())
        response = raw.read_response()
        assert response.status == 200
        assert response.header("connection") == "close"
        assert raw.is_closed()


def test_silent_fresh_connection_does_not_hold_the_drain(http_server):
    """A connection that never sends is closed after a short grace, not the full timeouts."""
    server = http_server(apps.hello, timeout_graceful_shutdown=30, timeout_request_header=30)
    with RawClient(server.port) as raw:
        wait_for(lambda: server.connections, message="the connection to be accepted")
        started = time.monotonic()
        server.server.request_stop()
        assert raw.read_to_eof() == b""
        server.thread.join(DEADLINE)
        assert not server.thread.is_alive()
        assert time.monotonic() - started < 10


def test_drain_deadline_answers_503_and_cancels(http_server, caplog):
    """At the drain deadline, a request without a response gets 503 and its task ends."""
    caplog.set_level("INFO", logger="corral.error")
    gate = Gate()
    server = http_server(apps.gated(gate), timeout_graceful_shutdown=0.1)
    with RawClient(server.port) as raw:
        raw.send(get("/never"))
        wait_for(gate.entered.is_set)
        server.server.request_stop()
        response = raw.read_response()
        assert response.status == 503
        assert raw.is_closed()
    server.thread.join(DEADLINE)
    assert not server.thread.is_alive()
    assert not server.server.state.tasks
    assert any("Graceful shutdown ended" in r.getMessage() for r in caplog.records)


def test_immediate_stop_does_not_wait(http_server):
    """An immediate stop skips the drain wait even with a long graceful timeout."""
    gate = Gate()
    server = http_server(apps.gated(gate), timeout_graceful_shutdown=60)
    with RawClient(server.port) as raw:
        raw.send(get("/never"))
        wait_for(gate.entered.is_set)
        server.server.request_stop(immediate=True)
        server.thread.join(DEADLINE)
        assert not server.thread.is_alive()
        assert raw.read_response().status == 503


def test_lame_duck_health_and_connection_close(http_server):
    """During --timeout-shutdown-delay the health path says 503 and responses close."""
    server = http_server(apps.hello, health_path="/healthz", timeout_shutdown_delay=30)
    assert httpx.get(server.url("/healthz")).status_code == 200
    server.server.request_stop(lame_duck=True)
    wait_for(lambda: server.server.state.draining, message="the lame-duck period")
    health = httpx.get(server.url("/healthz"))
    assert health.status_code == 503
    response = httpx.get(server.url())
    assert response.status_code == 200
    assert response.headers["connection"] == "close"
    server.server.request_stop()  # a second stop request ends the delay early
    server.thread.join(DEADLINE)
    assert not server.thread.is_alive()


# --- single-process mode, real signals ------------------------------------------------------
SCRIPT = """
import sys
from corral.config import Config
from corral.listeners import close_listeners, open_listeners
from corral.logging import configure_logging
from corral.worker.process import run_single

config = Config(app=sys.argv[1], port=0, lifespan=sys.argv[2], loop=sys.argv[3])
configure_logging(config)
listeners = open_listeners(config)
try:
    code = run_single(config, listeners)
finally:
    close_listeners(listeners)
sys.exit(int(code))
"""


class Process:
    def __init__(self, app: str, lifespan: str = "auto", loop: str = "auto") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SCRIPT, app, lifespan, loop],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_line(self, pattern: str) -> re.Match[str]:
        regex = re.compile(pattern)

        def find() -> re.Match[str] | None:
            for line in list(self.lines):
                match = regex.search(line)
                if match:
                    return match
            if self.proc.poll() is not None and not self._reader.is_alive():
                raise AssertionError(f"process exited; log: {self.lines}")
            return None

        match: re.Match[str] = wait_for(find, message=pattern)
        return match

    def wait_exit(self) -> int:
        code = self.proc.wait(DEADLINE)
        self._reader.join(DEADLINE)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def process():
    started: list[Process] = []

    def start(*args: str) -> Process:
        proc = Process(*args)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_single_process_signals_and_log_lines(process, loop):
    """SIGHUP is logged and ignored; SIGINT stops gracefully with exit 0 and uvicorn's lines."""
    proc = process("tests.apps:with_lifespan", "on", loop)
    port = proc.wait_line(r"corral running on http://127\.0\.0\.1:(\d+) \(Press CTRL\+C to quit\)")[
        1
    ]
    assert httpx.get(f"http://127.0.0.1:{port}/").text == "hi"
    proc.proc.send_signal(signal.SIGHUP)
    proc.wait_line("SIGHUP")
    assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 200
    proc.proc.send_signal(signal.SIGINT)
    assert proc.wait_exit() == 0
    pid = proc.proc.pid
    expected = [
        f"INFO:     Started server process [{pid}]",
        "INFO:     Waiting for application startup.",
        "INFO:     Application startup complete.",
        f"INFO:     corral running on http://127.0.0.1:{port} (Press CTRL+C to quit)",
        "INFO:     Shutting down",
        "INFO:     Waiting for application shutdown.",
        "INFO:     Application shutdown complete.",
        f"INFO:     Finished server process [{pid}]",
    ]
    positions = [proc.lines.index(line) for line in expected]
    assert positions == sorted(positions)


def test_second_interrupt_stops_at_once(process):
    """A second SIGINT ends the drain of a hung request immediately."""
    proc = process("tests.apps:hang", "auto", "auto")
    port = proc.wait_line(r"running on http://127\.0\.0\.1:(\d+)")[1]
    with RawClient(int(port)) as raw:
        raw.send(get())
        started = time.monotonic()
        proc.proc.send_signal(signal.SIGINT)
        proc.wait_line("Shutting down")
        proc.proc.send_signal(signal.SIGINT)
        assert proc.wait_exit() == 0
        assert time.monotonic() - started < DEADLINE


def test_startup_failure_exit_code(process):
    """A failed lifespan startup exits with code 3 and the app's message."""
    proc = process("tests.apps:startup_fails", "on", "auto")
    assert proc.wait_exit() == 3
    assert any("database unreachable" in line for line in proc.lines)


def test_server_run_blocks_until_stopped():
    """Server.run() serves on its own loop until a stop request, like uvicorn's."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    server = Server(Config(app=apps.hello, lifespan="off"), apps.hello)
    thread = threading.Thread(target=server.run, args=([sock],), daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, message="the server to start")
        port = sock.getsockname()[1]
        assert httpx.get(f"http://127.0.0.1:{port}/").text == "Hello, world!"
    finally:
        server.request_stop()
        thread.join(DEADLINE)
        sock.close()
    assert not thread.is_alive()
