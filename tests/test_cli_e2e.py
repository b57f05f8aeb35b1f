"""End to end: the corral command serving real requests, stopped by real signals."""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

DEADLINE = 20.0
ROOT = Path(__file__).resolve().parent.parent


def write_app(tmp_path: Path, source: str, name: str = "main") -> None:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))


BANNER = re.compile(r"corral running on http://127\.0\.0\.1:(\d+) \(Press CTRL\+C to quit\)")

E2E_APP = """
import os, signal

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if os.environ.get("FAIL_STARTUP"):
                    await send({"type": "lifespan.startup.failed", "message": "no database"})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = os.environ.get("GREETING", "hello from corral").encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
"""


class Running:
    """A corral subprocess whose stderr is read line by line until a pattern appears."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._pending = ""

    def wait_for(self, pattern: re.Pattern[str] | str) -> re.Match[str]:
        """The first match in the next stderr lines; fails at the deadline or at exit."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + DEADLINE
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        while True:
            while "\n" in self._pending:
                line, self._pending = self._pending.split("\n", 1)
                self.lines.append(line + "\n")
                match = regex.search(line)
                if match:
                    return match
            remaining = deadline - time.monotonic()
            chunk = b""
            if remaining > 0 and select.select([fd], [], [], remaining)[0]:
                chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(
                    f"{regex.pattern!r} not seen; stderr so far:\n{''.join(self.lines)}"
                )
            self._pending += chunk.decode(errors="replace")

    def finish(self) -> tuple[int, str]:
        _, rest = self.proc.communicate(timeout=DEADLINE)
        return self.proc.returncode, "".join(self.lines) + self._pending + rest


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Any]:
    procs: list[subprocess.Popen[str]] = []

    def run(
        *args: str,
        env: dict[str, str] | None = None,
        app: str = "main:app",
        cwd: Path = tmp_path,
        stdout: int = subprocess.DEVNULL,
        listen: tuple[str, ...] = ("--port", "0"),
    ) -> Running:
        write_app(tmp_path, E2E_APP)
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
        full_env.update(env or {})
        proc = subprocess.Popen(
            [sys.executable, "-m", "corral", app, *listen, *args],
            cwd=cwd,
            env=full_env,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        return Running(proc)

    yield run
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.smoke
def test_serves_and_stops_on_sigterm(start: Any) -> None:
    """--port 0 logs the real port in the banner, serves it, and SIGTERM exits 0."""
    server = start()
    port = int(server.wait_for(BANNER).group(1))
    response = httpx.get(f"http://127.0.0.1:{port}/", timeout=DEADLINE)
    assert response.status_code == 200 and response.text == "hello from corral"
    server.proc.send_signal(signal.SIGTERM)
    code, stderr = server.finish()
    assert code == 0, stderr
    assert "Finished server process" in stderr


def test_sighup_is_logged_and_ignored(start: Any) -> None:
    """SIGHUP in single-process mode is logged and the server keeps serving."""
    server = start()
    port = int(server.wait_for(BANNER).group(1))
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for("SIGHUP|HUP")
    response = httpx.get(f"http://127.0.0.1:{port}/", timeout=DEADLINE)
    assert response.status_code == 200
    server.proc.send_signal(signal.SIGTERM)
    code, _ = server.finish()
    assert code == 0


def test_lifespan_startup_failure_exits_3(start: Any) -> None:
    """A lifespan startup failure exits 3 with the app's message."""
    server = start("--lifespan", "on", env={"FAIL_STARTUP": "1"})
    code, stderr = server.finish()
    assert code == 3, stderr
    assert "no database" in stderr


def test_sigint_stops_cleanly(start: Any) -> None:
    """SIGINT (Ctrl+C) is a graceful stop with exit 0."""
    server = start()
    server.wait_for(BANNER)
    server.proc.send_signal(signal.SIGINT)
    code, stderr = server.finish()
    assert code == 0, stderr
    assert "Application shutdown complete." in stderr


def test_access_log_on_stdout(start: Any) -> None:
    """Access lines go to stdout in uvicorn's format; lifecycle lines stay on stderr."""
    server = start(stdout=subprocess.PIPE)
    port = int(server.wait_for(BANNER).group(1))
    assert httpx.get(f"http://127.0.0.1:{port}/a?b=1", timeout=DEADLINE).status_code == 200
    server.proc.send_signal(signal.SIGTERM)
    stdout, stderr = server.proc.communicate(timeout=DEADLINE)
    assert re.fullmatch(r'INFO:     127\.0\.0\.1:\d+ - "GET /a\?b=1 HTTP/1\.1" 200 OK\n', stdout), (
        stdout
    )
    assert "GET /a" not in stderr


def test_no_access_log(start: Any) -> None:
    """--no-access-log leaves stdout empty."""
    server = start("--no-access-log", stdout=subprocess.PIPE)
    port = int(server.wait_for(BANNER).group(1))
    assert httpx.get(f"http://127.0.0.1:{port}/", timeout=DEADLINE).status_code == 200
    server.proc.send_signal(signal.SIGTERM)
    stdout, _ = server.proc.communicate(timeout=DEADLINE)
    assert stdout == ""


def test_env_file_reaches_the_app(start: Any, tmp_path: Path) -> None:
    """Variables from --env-file (python-dotenv's syntax, a bare KEY included) are in the
    app's environment, and uvicorn's line says where they came from."""
    (tmp_path / "app.env").write_text(
        'WHO=the env file\nUNSET_KEY\nexport GREETING="from ${WHO}" # comment\n'
    )
    server = start("--env-file", "app.env")
    server.wait_for(r"^INFO:     Loading environment from 'app\.env'$")
    port = int(server.wait_for(BANNER).group(1))
    assert httpx.get(f"http://127.0.0.1:{port}/", timeout=DEADLINE).text == "from the env file"
    server.proc.send_signal(signal.SIGTERM)
    assert server.finish()[0] == 0


def test_uvicorn_yaml_log_config_prints_uvicorn_lines(start: Any, tmp_path: Path) -> None:
    """uvicorn's own LOGGING_CONFIG, as YAML, with uvicorn's logger and formatter names:
    corral prints uvicorn's lines through it (lifecycle on stderr, access on stdout)."""
    from tests.test_logging import UVICORN_YAML

    (tmp_path / "log.yaml").write_text(UVICORN_YAML.replace(" [yaml]", ""))
    server = start("--log-config", "log.yaml", stdout=subprocess.PIPE)
    server.wait_for(r"^INFO:     Started server process \[\d+\]$")
    server.wait_for(r"^INFO:     Application startup complete\.$")
    port = int(server.wait_for(BANNER).group(1))
    assert httpx.get(f"http://127.0.0.1:{port}/path?q=1", timeout=DEADLINE).status_code == 200
    server.proc.send_signal(signal.SIGTERM)
    stdout, rest = server.proc.communicate(timeout=DEADLINE)
    assert server.proc.returncode == 0
    assert re.fullmatch(
        r'INFO:     127\.0\.0\.1:\d+ - "GET /path\?q=1 HTTP/1\.1" 200 OK\n', stdout
    ), stdout
    assert "WARNING" not in "".join(server.lines) + rest


CONTEXT_APP = """
import contextvars

MARK = contextvars.ContextVar("mark", default="unset")
MARK.set("set at import")  # as instrumentation set up at import time would

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = MARK.get().encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
"""


@pytest.mark.parametrize("workers", [(), ("--workers", "1")], ids=["single", "master"])
@pytest.mark.parametrize(
    ("flags", "expected"),
    [((), "set at import"), (("--reset-contextvars",), "unset")],
    ids=["inherited", "reset"],
)
def test_reset_contextvars(
    start: Any, tmp_path: Path, workers: tuple[str, ...], flags: tuple[str, ...], expected: str
) -> None:
    """Requests see the context the app was loaded in; --reset-contextvars gives them none."""
    write_app(tmp_path, CONTEXT_APP, "ctxapp")
    server = start(*workers, *flags, app="ctxapp:app")
    port = int(server.wait_for(BANNER).group(1))
    for _ in range(2):
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=DEADLINE).text == expected
    server.proc.send_signal(signal.SIGTERM)
    assert server.finish()[0] == 0


def test_serves_unix_socket_and_removes_it(start: Any, tmp_path: Path) -> None:
    """--uds serves HTTP on the socket file, logs it in the banner, and removes it at exit."""
    path = tmp_path / "corral.sock"
    server = start(listen=("--uds", str(path)))
    server.wait_for(re.escape(f"corral running on unix socket {path} (Press CTRL+C to quit)"))
    transport = httpx.HTTPTransport(uds=str(path))
    with httpx.Client(transport=transport, timeout=DEADLINE) as client:
        assert client.get("http://localhost/").text == "hello from corral"
    server.proc.send_signal(signal.SIGTERM)
    assert server.finish()[0] == 0
    assert not path.exists()


def test_several_listeners_each_get_a_banner(start: Any) -> None:
    """Two --bind addresses are both served, each with its own banner line."""
    server = start(listen=("--bind", "127.0.0.1:0", "--bind", "127.0.0.1:0"))
    ports = [int(server.wait_for(BANNER).group(1)) for _ in range(2)]
    assert ports[0] != ports[1]
    for port in ports:
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=DEADLINE).status_code == 200
    server.proc.send_signal(signal.SIGTERM)
    assert server.finish()[0] == 0


@pytest.mark.parametrize(
    ("example", "expected"),
    [
        ("hello", "Hello, world!\n"),
        ("streaming", "line 1\nline 2\n"),
        ("lifespan_state", "requests served"),
        ("files", "hello.py\n"),
    ],
)
def test_examples_serve(start: Any, example: str, expected: str) -> None:
    """Each example serves with the command in its docstring, run from the repository root."""
    if not (ROOT / "examples" / f"{example}.py").exists():
        pytest.skip("needs the source checkout")
    server = start(app=f"examples.{example}:app", cwd=ROOT)
    port = int(server.wait_for(BANNER).group(1))
    response = httpx.get(f"http://127.0.0.1:{port}/?count=2", timeout=DEADLINE)
    assert response.status_code == 200
    assert expected in response.text
    server.proc.send_signal(signal.SIGTERM)
    assert server.finish()[0] == 0


def test_workers_flag_runs_the_master(start: Any) -> None:
    """--workers goes through the master: banner, 'Started parent process', serving, exit 0."""
    server = start("--workers", "1")
    port = int(server.wait_for(BANNER).group(1))
    server.wait_for(r"Started parent process \[\d+\]")
    server.wait_for("Application startup complete.")
    assert httpx.get(f"http://127.0.0.1:{port}/", timeout=DEADLINE).status_code == 200
    server.proc.send_signal(signal.SIGTERM)
    code, stderr = server.finish()
    assert code == 0, stderr


EMBED = """
import sys
import corral
from main import app
sys.exit(corral.run(app, port=0, lifespan="off", log_level="info"))
"""


@contextlib.contextmanager
def embedded(tmp_path: Path, script: str) -> Iterator[Running]:
    """Run ``python -c script`` next to the e2e app (``from main import app``); killed after."""
    write_app(tmp_path, E2E_APP)
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield Running(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_run_api_with_app_object(tmp_path: Path) -> None:
    """corral.run(app_object, **settings) serves the object and returns the exit code."""
    with embedded(tmp_path, EMBED) as server:
        port = int(server.wait_for(BANNER).group(1))
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=DEADLINE).status_code == 200
        server.proc.send_signal(signal.SIGTERM)
        code, stderr = server.finish()
        assert code == 0, stderr


def test_fd_listener_from_parent(tmp_path: Path) -> None:
    """--fd N serves a socket the parent bound and passed down."""
    write_app(tmp_path, E2E_APP)
    with socket.socket() as parent_sock:
        parent_sock.bind(("127.0.0.1", 0))
        port = parent_sock.getsockname()[1]
        fd = parent_sock.fileno()
        os.set_inheritable(fd, True)
        proc = subprocess.Popen(
            [sys.executable, "-m", "corral", "main:app", "--fd", str(fd)],
            cwd=tmp_path,
            pass_fds=(fd,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
    server = Running(proc)
    try:
        server.wait_for(BANNER)
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=DEADLINE).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert server.finish()[0] == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_colour_only_on_a_terminal(tmp_path: Path) -> None:
    """Log lines are coloured when stderr is a TTY and plain otherwise (NO_COLOR unset)."""
    import pty

    write_app(tmp_path, E2E_APP)
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral", "main:app", "--port", "0"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=terminal,
    )
    os.close(terminal)
    seen = b""
    try:
        deadline = time.monotonic() + DEADLINE
        while b"Press CTRL+C" not in seen and time.monotonic() < deadline:
            if select.select([controller], [], [], deadline - time.monotonic())[0]:
                seen += os.read(controller, 65536)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=DEADLINE)
    finally:
        os.close(controller)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert b"Press CTRL+C" in seen, seen
    assert b"\x1b[32mINFO\x1b[0m:" in seen
