"""--config: settings from a TOML file or pyproject's [tool.corral], their precedence and errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import corral.cli
import httpx
import pytest
from click.testing import CliRunner
from corral.config import Config
from corral.configfile import line_of

from tests.test_cli_e2e import BANNER, DEADLINE, E2E_APP, Running, write_app


@pytest.fixture
def invoke(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """Run the CLI in-process from tmp_path with serving replaced; (result, Config or None)."""
    seen: list[Config] = []
    monkeypatch.setattr(corral.cli, "serve", lambda config: seen.append(config) or 0)
    for name in list(os.environ):
        if name.startswith(("CORRAL_", "UVICORN_")) or name in ("PORT", "WEB_CONCURRENCY"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)

    def run(args: list[str], env: dict[str, str] | None = None) -> tuple[Any, Config | None]:
        seen.clear()
        result = CliRunner().invoke(corral.cli.cli, args, env=env)
        return result, (seen[0] if seen else None)

    yield run


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_file_settings_reach_config(invoke: Any, tmp_path: Path) -> None:
    """Every kind of value converts as its flag would: numbers, lists, headers, booleans."""
    path = write(
        tmp_path / "corral.toml",
        'app = "main:app"\nworkers = 3\nbind = ["127.0.0.1:9001"]\ntimeout-keep-alive = 2\n'
        'headers = ["X-Frame-Options: DENY"]\naccess_log = false\numask = "027"\n'
        'limit_worker_memory = "1GiB"\nws_per_message_deflate = false\n',
    )
    result, config = invoke(["--config", path])
    assert result.exit_code == 0, result.output
    assert config is not None and config.app == "main:app" and config.workers == 3
    assert config.bind == ("127.0.0.1:9001",) and config.timeout_keep_alive == 2.0
    assert config.headers == (("X-Frame-Options", "DENY"),) and config.access_log is False
    assert config.umask == 0o27 and config.limit_worker_memory == 1024
    assert config.deflate is False


def test_pyproject_tool_corral_table(invoke: Any, tmp_path: Path) -> None:
    path = write(
        tmp_path / "pyproject.toml", '[project]\nname = "x"\n\n[tool.corral]\nworkers = 2\n'
    )
    result, config = invoke(["main:app", "-c", path])
    assert result.exit_code == 0, result.output
    assert config is not None and config.workers == 2


def test_precedence(invoke: Any, tmp_path: Path) -> None:
    """command line > CORRAL_* > UVICORN_* > the file > WEB_CONCURRENCY/PORT > defaults."""
    path = write(
        tmp_path / "c.toml", "workers = 3\nport = 7000\nbacklog = 10\nlimit_max_requests = 5\n"
    )
    env = {"WEB_CONCURRENCY": "9", "PORT": "9999", "UVICORN_BACKLOG": "20"}
    _, config = invoke(["main:app", "-c", path], env=env)
    assert config is not None
    assert (config.workers, config.port, config.backlog) == (3, 7000, 20)
    env |= {"CORRAL_BACKLOG": "30", "CORRAL_WORKERS": "4"}
    _, config = invoke(["main:app", "-c", path, "--limit-max-requests", "6"], env=env)
    assert config is not None
    assert (config.workers, config.backlog, config.limit_max_requests) == (4, 30, 6)
    _, config = invoke(["main:app", "-c", path, "-w", "5"], env=env)
    assert config is not None and config.workers == 5
    # Without the file, the PaaS variables apply.
    _, config = invoke(["main:app"], env={"WEB_CONCURRENCY": "9"})
    assert config is not None and config.workers == 9


def test_config_from_the_environment(invoke: Any, tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", 'app = "pkg.main:app"\n')
    _, config = invoke([], env={"CORRAL_CONFIG": path})
    assert config is not None and config.app == "pkg.main:app"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "workers = 4\nwrokers = 2\n",
            "line 2: unknown setting 'wrokers' (did you mean 'workers'?)",
        ),
        ('\n\nworkers = "many"\n', "line 3: 'workers' expects a whole number or \"auto\""),
        ("workers = 0\n", "line 1: 'workers' must be greater than zero"),
        ("access_log = 1\n", "line 1: 'access_log' expects true or false"),
        ('loop = "trio"\n', "line 1: 'loop' expects one of auto, asyncio, uvloop"),
        ('ws = "wsproto"\n', "corral implements WebSockets on 'websockets' only"),
        ("bind = 8000\n", "line 1: 'bind' expects a list of strings"),
        ('limit_worker_memory = "lots"\n', "'limit_worker_memory' must be MiB"),
        ('config = "other.toml"\n', "unknown setting 'config'"),
        ("workers = [\n", "is not valid TOML"),
    ],
)
def test_errors_name_key_file_and_line(
    invoke: Any, tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path / "bad.toml", text)
    result, config = invoke(["main:app", "-c", path])
    assert result.exit_code == 2 and config is None
    assert "bad.toml" in result.output and expected in result.output, result.output


def test_missing_file_and_missing_table(invoke: Any, tmp_path: Path) -> None:
    result, _ = invoke(["main:app", "-c", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2 and "cannot read" in result.output
    path = write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n')
    result, _ = invoke(["main:app", "-c", path])
    assert result.exit_code == 2 and "has no [tool.corral] table" in result.output


def test_line_of_looks_in_the_right_table() -> None:
    text = '[project]\nworkers = 1\n\n[tool.corral]\n"workers" = 2\n'
    assert line_of(text, "workers", "tool.corral") == 5
    assert line_of(text, "workers", None) is None


def test_print_config_is_toml_with_sources(invoke: Any, tmp_path: Path) -> None:
    """--print-config prints what would run, each value's source, and reads back the same."""
    path = write(tmp_path / "c.toml", 'app = "main:app"\nworkers = 3\nheaders = ["X-A: b"]\n')
    result, config = invoke(
        ["-c", path, "--port", "0", "--print-config"], env={"CORRAL_BACKLOG": "7"}
    )
    assert result.exit_code == 0 and config is None, result.output
    lines = result.output.splitlines()
    assert "workers = 3  # file" in lines and "port = 0  # cli" in lines
    assert "backlog = 7  # env" in lines and "timeout_keep_alive = 5.0  # default" in lines
    again = write(tmp_path / "again.toml", result.output)
    result, config = invoke(["-c", again])
    assert result.exit_code == 0, result.output
    assert config is not None and (config.workers, config.port, config.backlog) == (3, 0, 7)
    assert config.headers == (("X-A", "b"),)
    assert tomllib.loads(Path(again).read_text())["app"] == "main:app"


def test_gunicorn_aliases_are_shown_and_work(invoke: Any) -> None:
    help_text = CliRunner().invoke(corral.cli.cli, ["--help"]).output
    for shown in (
        "-w, --workers",
        "--limit-max-requests, --max-requests",
        "--limit-max-requests-jitter, --max-requests-jitter",
        "--timeout-graceful-shutdown, --graceful-timeout",
        "-c, --config",
    ):
        assert shown in help_text
    args = ["main:app", "-w", "2", "--max-requests", "10", "--max-requests-jitter", "3",
            "--graceful-timeout", "4"]  # fmt: skip
    _, config = invoke(args)
    assert config is not None
    assert (config.workers, config.limit_max_requests, config.limit_max_requests_jitter) == (
        2,
        10,
        3,
    )
    assert config.timeout_graceful_shutdown == 4.0


@pytest.mark.smoke
def test_config_file_alone_starts_the_server(tmp_path: Path) -> None:
    """`corral --config corral.toml` with the app named in the file serves it."""
    write_app(tmp_path, E2E_APP)
    (tmp_path / "corral.toml").write_text('app = "main:app"\nport = 0\naccess_log = false\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CORRAL_", "UVICORN_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral", "--config", "corral.toml"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    server = Running(proc)
    try:
        port = int(server.wait_for(BANNER).group(1))
        response = httpx.get(f"http://127.0.0.1:{port}/", timeout=DEADLINE)
        assert response.text == "hello from corral"
        proc.send_signal(signal.SIGTERM)
        code, stderr = server.finish()
        assert code == 0, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
