"""The corral command: options generated from Config, usage errors, exit codes, end to end."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import corral.cli
import pytest
from click.testing import CliRunner
from corral import __version__
from corral.config import Config, options
from corral.errors import AppLoadError, ConfigError, ExitCode, StartupError

DEADLINE = 20.0


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
    for alias in ("--limit-request-field_size", "--http2"):
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
        (["--timeout-send", "-1"], "--timeout-send"),
    ],
)
def test_usage_errors_name_the_option(invoke: Any, args: list[str], named: str) -> None:
    """Bad flags and values exit 2 with a message naming the option; nothing is served."""
    result, config = invoke(["main:app", *args])
    assert result.exit_code == ExitCode.USAGE
    assert config is None
    assert named in result.output


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--ws", "wsproto"], "corral implements WebSockets on 'websockets' only"),
        (["--interface", "wsgi"], "corral serves ASGI only; wrap a WSGI app"),
    ],
)
def test_uvicorn_choices_corral_lacks_are_refused_but_not_offered(
    invoke: Any, args: list[str], reason: str
) -> None:
    """--help lists only the choices that work; typing uvicorn's others gets the reason."""
    flag, value = args
    result, config = invoke(["main:app", *args])
    assert result.exit_code == ExitCode.USAGE and config is None
    assert f"Invalid value for '{flag}': {reason}" in " ".join(result.output.split())
    help_text = CliRunner().invoke(corral.cli.cli, ["--help"]).output
    listed = re.search(re.escape(flag) + r" \[([a-z0-9|-]+)\]", help_text)
    assert listed is not None and value not in listed.group(1).split("|")
    typo = invoke(["main:app", flag, "nope"])[0].output
    assert value not in typo and "is not one of" in typo


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
    assert result.stderr.splitlines() == [
        "INFO:     Loading environment from 'bad.env'",
        "ERROR:    Invalid value for '--env-file': bad.env, line 1: python-dotenv cannot"
        " parse 'NOT A LINE'",
    ]


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


#: Every option of uvicorn's command line (0.3x), with a sample value (None for flags).
UVICORN_OPTIONS: list[tuple[str, str | None]] = [
    ("--host", "0.0.0.0"),
    ("--port", "9000"),
    ("--uds", "/tmp/u.sock"),
    ("--fd", "3"),
    ("--reload", None),
    ("--reload-dir", "."),
    ("--reload-include", "*.py"),
    ("--reload-exclude", "*.tmp"),
    ("--reload-delay", "0.5"),
    ("--workers", "2"),
    ("--loop", "asyncio"),
    ("--http", "h11"),
    ("--http2", None),
    ("--ws", "websockets"),
    ("--ws-max-size", "1024"),
    ("--ws-max-queue", "8"),
    ("--ws-ping-interval", "5"),
    ("--ws-ping-timeout", "5"),
    ("--ws-per-message-deflate", "false"),
    ("--lifespan", "on"),
    ("--interface", "asgi3"),
    ("--env-file", ".env"),
    ("--log-config", "log.json"),
    ("--log-level", "debug"),
    ("--access-log", None),
    ("--no-access-log", None),
    ("--use-colors", None),
    ("--no-use-colors", None),
    ("--proxy-headers", None),
    ("--no-proxy-headers", None),
    ("--server-header", None),
    ("--no-server-header", None),
    ("--date-header", None),
    ("--no-date-header", None),
    ("--forwarded-allow-ips", "*"),
    ("--root-path", "/api"),
    ("--limit-concurrency", "10"),
    ("--backlog", "128"),
    ("--limit-max-requests", "1000"),
    ("--limit-max-requests-jitter", "10"),
    ("--timeout-keep-alive", "5"),
    ("--timeout-graceful-shutdown", "10"),
    ("--timeout-worker-healthcheck", "5"),
    ("--ssl-keyfile", "k.pem"),
    ("--ssl-certfile", "c.pem"),
    ("--ssl-keyfile-password", "pw"),
    ("--ssl-version", "17"),
    ("--ssl-cert-reqs", "0"),
    ("--ssl-ca-certs", "ca.pem"),
    ("--ssl-ciphers", "TLSv1"),
    ("--header", "X-A:1"),
    ("--app-dir", "."),
    ("--h11-max-incomplete-event-size", "1024"),
    ("--reset-contextvars", None),
    ("--factory", None),
]


@pytest.mark.parametrize(("flag", "value"), UVICORN_OPTIONS)
def test_every_uvicorn_option_is_accepted_or_clearly_refused(
    invoke: Any, flag: str, value: str | None
) -> None:
    """A uvicorn command line works unchanged, or fails naming the unimplemented option."""
    args = ["main:app", flag] + ([] if value is None else [value])
    if flag == "--ssl-keyfile":
        args += ["--ssl-certfile", "c.pem"]
    result, config = invoke(args)
    if result.exit_code == 0:
        assert config is not None
        return
    assert result.exit_code == ExitCode.USAGE
    assert "No such option" not in result.output
    assert flag in result.output and "not implement" in result.output
