"""The corral command: options generated from Config, usage errors, exit codes, end to end."""

from __future__ import annotations

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

import corral.cli
import httpx
import pytest
from click.testing import CliRunner
from corral import __version__
from corral.config import PENDING, Config, options
from corral.errors import AppLoadError, ConfigError, ExitCode, StartupError

DEADLINE = 20.0
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def invoke(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Run the CLI in-process with serving replaced; returns (result, Config or None)."""
    seen: list[Config] = []
    code = {"value": 0}

    def fake_serve(config: Config) -> int:
        seen.append(config)
        return code["value"]

    monkeypatch.setattr(corral.cli, "serve", fake_serve)
    for name in list(os.environ):
        if name.startswith(("CORRAL_", "UVICORN_")) or name in ("PORT", "WEB_CONCURRENCY"):
            monkeypatch.delenv(name)

    def run(args: list[str], exit_code: int = 0) -> tuple[Any, Config | None]:
        seen.clear()
        code["value"] = exit_code
        result = CliRunner().invoke(corral.cli.cli, args)
        return result, (seen[0] if seen else None)

    yield run


@pytest.mark.smoke
def test_defaults_come_from_config(invoke: Any) -> None:
    """With only APP given, the Config equals Config's own defaults."""
    result, config = invoke(["main:app"])
    assert result.exit_code == 0, result.output
    assert config == Config(app="main:app")


def test_help_lists_every_option() -> None:
    """--help shows every declared flag with its help text."""
    result = CliRunner().invoke(corral.cli.cli, ["--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for _name, option, _default in options():
        for flag in option.flags:
            for part in flag.split("/"):
                assert part in text, part
        assert " ".join(option.help.split()[:2]) in text, option.help
    for alias in ("--limit-request-field_size", "--http2", "--reset-contextvars"):
        assert alias not in text


@pytest.mark.parametrize(
    ("args", "field", "expected"),
    [
        (
            ["--header", "X-A: 1", "--header", "X-B:two:parts"],
            "headers",
            (("X-A", "1"), ("X-B", "two:parts")),
        ),
        (["--ws-per-message-deflate", "false"], "ws_per_message_deflate", False),
        (["--ws-per-message-deflate", "true"], "ws_per_message_deflate", True),
        (["--umask", "027"], "umask", 0o027),
        (["--umask", "0o077"], "umask", 0o077),
        (["--no-server-header"], "server_header", False),
        (["--no-access-log"], "access_log", False),
        (["--use-colors"], "use_colors", True),
        (["--factory"], "factory", True),
        (
            ["-b", "127.0.0.1:0", "--bind", "unix:/tmp/x.sock"],
            "bind",
            ("127.0.0.1:0", "unix:/tmp/x.sock"),
        ),
        (["--limit-request-field_size", "100"], "limit_request_field_size", 100),
        (["--timeout-keep-alive", "7"], "timeout_keep_alive", 7.0),
        (["--log-level", "trace"], "log_level", "trace"),
    ],
)
def test_option_values(invoke: Any, args: list[str], field: str, expected: Any) -> None:
    """Each option kind is converted to the value Config expects."""
    result, config = invoke(["main:app", *args])
    assert result.exit_code == 0, result.output
    assert getattr(config, field) == expected


@pytest.mark.smoke
@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--port", "eighty"], "--port"),
        (["--port", "70000"], "--port"),
        (["--backlog", "0"], "--backlog"),
        (["--loop", "trio"], "--loop"),
        (["--header", "no-colon"], "--header"),
        (["--umask", "999"], "--umask"),
        (["--bind", "::1:80"], "--bind"),
        (["--interface", "wsgi"], "--interface"),
        (["--no-such-flag"], "--no-such-flag"),
        (["--http2"], "--http2"),
        (["--reset-contextvars"], "--reset-contextvars"),
    ],
)
def test_usage_errors_name_the_option(invoke: Any, args: list[str], named: str) -> None:
    """Bad flags and values exit 2 with a message naming the option; nothing is served."""
    result, config = invoke(["main:app", *args])
    assert result.exit_code == ExitCode.USAGE
    assert config is None
    assert named in result.output


def test_pending_option_is_refused(invoke: Any) -> None:
    """A declared but not yet implemented option is an error, never silently ignored."""
    if not PENDING:
        pytest.skip("every declared option is implemented")
    name = sorted(PENDING)[0]
    option = next(o for n, o, _ in options() if n == name)
    flag = option.flags[0].split("/")[0]
    args = [flag] if option.kind in ("flag", "bool") else [flag, "1"]
    result, config = invoke(["main:app", *args])
    assert result.exit_code == ExitCode.USAGE and config is None
    assert flag in result.output


def test_missing_app(invoke: Any) -> None:
    """Without APP (and no CORRAL_APP/UVICORN_APP) the usage error names APP."""
    result, _ = invoke([])
    assert result.exit_code == 2
    assert "Missing argument 'APP'" in result.output


def test_exit_code_of_serving_is_the_process_exit_code(invoke: Any) -> None:
    """Whatever serve_config returns becomes the command's exit code."""
    result, _ = invoke(["main:app"], exit_code=3)
    assert result.exit_code == 3


def test_main_exits_with_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """main() turns the result into SystemExit with that code (the only sys.exit)."""
    monkeypatch.setattr(corral.cli, "serve", lambda config: ExitCode.APP_FAILED)
    with pytest.raises(SystemExit) as info:
        corral.cli.main(["main:app"])
    assert info.value.code == 3
    with pytest.raises(SystemExit) as info:
        corral.cli.main(["main:app", "--port", "x"])
    assert info.value.code == 2


# --- subprocess: the real command -------------------------------------------------------


def corral_cmd(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Any:
    """Run ``python -m corral`` to completion and return the CompletedProcess."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("CORRAL_", "UVICORN_"))}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "corral", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )


@pytest.mark.smoke
def test_version(tmp_path: Path) -> None:
    """--version prints corral's and Python's versions and exits 0."""
    result = corral_cmd("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith(f"Running corral {__version__} with CPython")


@pytest.mark.smoke
def test_bad_flag_exits_2(tmp_path: Path) -> None:
    """An unknown flag exits 2 and names the flag."""
    result = corral_cmd("main:app", "--bogus", cwd=tmp_path)
    assert result.returncode == 2
    assert "--bogus" in result.stderr


def test_bad_value_exits_2(tmp_path: Path) -> None:
    """A bad option value exits 2 and names the option."""
    result = corral_cmd("main:app", "--timeout-keep-alive", "-1", cwd=tmp_path)
    assert result.returncode == 2
    assert "--timeout-keep-alive" in result.stderr and "must be zero or more" in result.stderr


def test_bad_env_file_exits_2(tmp_path: Path) -> None:
    """A malformed --env-file exits 2 with one error line naming it."""
    (tmp_path / "bad.env").write_text("NOT A LINE\n")
    result = corral_cmd("main:app", "--env-file", "bad.env", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("ERROR:    Invalid value for '--env-file'")
    assert "Traceback" not in result.stderr


def test_address_in_use_exits_1(tmp_path: Path) -> None:
    """A port already taken exits 1 with uvicorn's one-line bind error."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = corral_cmd("main:app", "--port", str(port), cwd=tmp_path)
    assert result.returncode == 1
    assert "address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def write_app(tmp_path: Path, source: str, name: str = "main") -> None:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))


@pytest.mark.smoke
def test_missing_module_exits_3(tmp_path: Path) -> None:
    """A module that can't be imported exits 3 with what was tried, shown once."""
    result = corral_cmd("nosuchmodule:app", "--port", "0", cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert result.stderr.count("Could not import module 'nosuchmodule'") == 1
    assert str(tmp_path) in result.stderr


def test_missing_attribute_exits_3(tmp_path: Path) -> None:
    """A missing attribute exits 3 naming it."""
    write_app(tmp_path, "async def app(scope, receive, send):\n    pass\n")
    result = corral_cmd("main:application", "--port", "0", cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert 'Attribute "application" not found in "main"' in result.stderr


def test_import_error_in_user_module_exits_3_with_traceback(tmp_path: Path) -> None:
    """An exception in the user's module exits 3 and shows its traceback once."""
    write_app(tmp_path, "import os\nraise KeyError('DATABASE_URL')\n")
    result = corral_cmd("main:app", "--port", "0", cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert result.stderr.count("Traceback (most recent call last)") == 1
    assert "main.py" in result.stderr and "KeyError: 'DATABASE_URL'" in result.stderr


# --- end to end: a real server ------------------------------------------------------------

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
    """Variables from --env-file are in the app's environment."""
    (tmp_path / "app.env").write_text('export GREETING="from the env file" # comment\n')
    server = start("--env-file", "app.env")
    port = int(server.wait_for(BANNER).group(1))
    assert httpx.get(f"http://127.0.0.1:{port}/", timeout=DEADLINE).text == "from the env file"
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


def test_run_api_with_app_object(tmp_path: Path) -> None:
    """corral.run(app_object, **settings) serves the object and returns the exit code."""
    write_app(tmp_path, E2E_APP)
    proc = subprocess.Popen(
        [sys.executable, "-c", EMBED],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    server = Running(proc)
    try:
        port = int(server.wait_for(BANNER).group(1))
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=DEADLINE).status_code == 200
        proc.send_signal(signal.SIGTERM)
        code, stderr = server.finish()
        assert code == 0, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- serve_config: errors become exit codes -----------------------------------------------


@pytest.fixture
def fake_single(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Replaces corral.worker.process with a stub whose run_single does what the test says."""
    import types

    behaviour: dict[str, Any] = {}

    def run_single(config: Config, listeners: list[Any], *_: Any, **__: Any) -> ExitCode:
        behaviour["listeners"] = [listener.url for listener in listeners]
        error = behaviour.get("raise")
        if error is not None:
            raise error
        return ExitCode.OK

    module = types.ModuleType("corral.worker.process")
    module.run_single = run_single  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "corral.worker.process", module)
    yield behaviour
    import logging

    for name in ("corral", "corral.error", "corral.access"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.setLevel(logging.NOTSET)
        logger.propagate = True
        logger.disabled = False


@pytest.mark.parametrize(
    ("error", "code", "text"),
    [
        (None, ExitCode.OK, None),
        (AppLoadError("Could not import module 'x'"), ExitCode.APP_FAILED, "Could not import"),
        (ConfigError("--loop", "uvloop is not installed"), ExitCode.USAGE, "'--loop'"),
        (StartupError("startup failed"), ExitCode.APP_FAILED, "startup failed"),
        (RuntimeError("bug"), ExitCode.ERROR, "Traceback"),
    ],
)
def test_serve_config_maps_errors_to_exit_codes(
    fake_single: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    error: Exception | None,
    code: ExitCode,
    text: str | None,
) -> None:
    """CorralErrors become their exit code with one log line; other exceptions exit 1."""
    from corral.main import serve_config

    fake_single["raise"] = error
    result = serve_config(Config(app="x:y", port=0))
    assert result == code
    assert fake_single["listeners"][0].startswith("http://127.0.0.1:")
    stderr = capsys.readouterr().err
    error_lines = [line for line in stderr.splitlines() if line.startswith("ERROR:")]
    if text is None:
        assert error_lines == []
    else:
        assert len(error_lines) == 1, stderr
        assert text in stderr


def test_serve_config_bad_env_file_is_usage(
    fake_single: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad --env-file is reported once and exits 2 before anything is bound."""
    from corral.main import serve_config

    (tmp_path / "bad.env").write_text("=oops\n")
    config = Config(app="x:y", port=0, env_file=str(tmp_path / "bad.env"))
    assert serve_config(config) == ExitCode.USAGE
    assert "listeners" not in fake_single
    assert capsys.readouterr().err.count("ERROR:    Invalid value for '--env-file'") == 1


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
