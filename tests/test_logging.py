"""Logging: uvicorn's line format under corral's loggers, levels, log configs, log reopening."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from corral.config import Config
from corral.errors import ConfigError
from corral.logging import (
    TRACE_LEVEL,
    AccessFormatter,
    LevelPrefixFormatter,
    configure_logging,
    reopen_logs,
)

ACCESS_ARGS = ("127.0.0.1:53144", "GET", "/", "1.1", "200 OK")
ACCESS_FORMAT = '%s - "%s %s HTTP/%s" %s'


@pytest.fixture(autouse=True)
def _reset_corral_loggers() -> Iterator[None]:
    """Leave corral's loggers as found, since configure_logging changes global state."""
    yield
    for name in ("corral", "corral.error", "corral.access", "corral.test"):
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            handler.close()
        logger.handlers = []
        logger.setLevel(logging.NOTSET)
        logger.propagate = True
        logger.disabled = False


def record(level: int, message: str, args: Any = ()) -> logging.LogRecord:
    return logging.LogRecord("corral.error", level, __file__, 1, message, args, None)


@pytest.mark.smoke
@pytest.mark.parametrize(
    ("level", "prefix"),
    [
        (logging.INFO, "INFO:     "),
        (logging.WARNING, "WARNING:  "),
        (logging.CRITICAL, "CRITICAL: "),
        (TRACE_LEVEL, "TRACE:    "),
        (logging.DEBUG, "DEBUG:    "),
    ],
)
def test_level_prefix_is_padded_like_uvicorn(level: int, prefix: str) -> None:
    """Messages start with LEVEL: padded so that messages line up, as uvicorn prints them."""
    formatter = LevelPrefixFormatter("%(levelprefix)s %(message)s", use_colors=False)
    assert formatter.format(record(level, "Application startup complete.")) == (
        prefix + "Application startup complete."
    )


def test_trace_level_name() -> None:
    """Level 5 is registered as TRACE."""
    assert logging.getLevelName(TRACE_LEVEL) == "TRACE"


@pytest.mark.smoke
def test_access_line_format() -> None:
    """Access lines render as uvicorn's: INFO:     client - "GET / HTTP/1.1" 200 OK."""
    formatter = AccessFormatter("%(levelprefix)s %(message)s", use_colors=False)
    line = formatter.format(record(logging.INFO, ACCESS_FORMAT, ACCESS_ARGS))
    assert line == 'INFO:     127.0.0.1:53144 - "GET / HTTP/1.1" 200 OK'


def test_uvicorn_access_fields() -> None:
    """uvicorn's access format fields work, so migrated --log-config formats keep working."""
    formatter = AccessFormatter(
        '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False
    )
    line = formatter.format(record(logging.INFO, ACCESS_FORMAT, ACCESS_ARGS))
    assert line == 'INFO:     127.0.0.1:53144 - "GET / HTTP/1.1" 200 OK'


def test_colours_only_when_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Colour codes appear when forced on, never when off, and not on a non-TTY by default."""
    on = AccessFormatter("%(levelprefix)s %(message)s", use_colors=True)
    off = AccessFormatter("%(levelprefix)s %(message)s", use_colors=False)
    auto = AccessFormatter("%(levelprefix)s %(message)s", use_colors=None, stream="stdout")
    rec = record(logging.INFO, ACCESS_FORMAT, ACCESS_ARGS)
    coloured = on.format(rec)
    assert "\x1b[" in coloured and "200 OK" in coloured
    assert "\x1b[" not in off.format(rec)
    assert "\x1b[" not in auto.format(rec)  # pytest captures stdout: not a TTY
    # the record itself is untouched, so other handlers still see plain arguments
    assert rec.args == ACCESS_ARGS


def test_default_config_streams(capsys: pytest.CaptureFixture[str]) -> None:
    """Lifecycle lines go to stderr through corral.error, access lines to stdout."""
    configure_logging(Config(app="x:y"))
    logging.getLogger("corral.error").info("Started server process [%d]", 42)
    logging.getLogger("corral.access").info(ACCESS_FORMAT, *ACCESS_ARGS)
    logging.getLogger("corral.error").debug("hidden at info level")
    out, err = capsys.readouterr()
    assert err == "INFO:     Started server process [42]\n"
    assert out == 'INFO:     127.0.0.1:53144 - "GET / HTTP/1.1" 200 OK\n'


def test_log_level_trace(capsys: pytest.CaptureFixture[str]) -> None:
    """--log-level trace lets TRACE lines through on corral's loggers."""
    configure_logging(Config(app="x:y", log_level="trace"))
    logging.getLogger("corral.error").log(TRACE_LEVEL, "wire bytes")
    assert capsys.readouterr().err == "TRACE:    wire bytes\n"


def test_log_level_warning_hides_info(capsys: pytest.CaptureFixture[str]) -> None:
    """--log-level warning hides lifecycle info and access lines."""
    configure_logging(Config(app="x:y", log_level="warning"))
    logging.getLogger("corral.error").info("quiet")
    logging.getLogger("corral.access").info(ACCESS_FORMAT, *ACCESS_ARGS)
    logging.getLogger("corral.error").warning("loud")
    out, err = capsys.readouterr()
    assert out == "" and err == "WARNING:  loud\n"


def test_no_access_log(capsys: pytest.CaptureFixture[str]) -> None:
    """--no-access-log disables the access logger (isEnabledFor is False: no work per request)."""
    configure_logging(Config(app="x:y", access_log=False))
    access = logging.getLogger("corral.access")
    access.info(ACCESS_FORMAT, *ACCESS_ARGS)
    assert not access.isEnabledFor(logging.INFO)
    assert capsys.readouterr().out == ""


def _file_config(path: Path) -> dict[str, Any]:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(name)s|%(levelname)s|%(message)s"}},
        "handlers": {
            "file": {"class": "logging.FileHandler", "filename": str(path), "formatter": "plain"}
        },
        "loggers": {"corral": {"handlers": ["file"], "level": "INFO", "propagate": False}},
    }


def test_log_config_json(tmp_path: Path) -> None:
    """--log-config FILE.json is applied with dictConfig."""
    log_file = tmp_path / "corral.log"
    config_file = tmp_path / "logging.json"
    config_file.write_text(json.dumps(_file_config(log_file)))
    configure_logging(Config(app="x:y", log_config=str(config_file)))
    logging.getLogger("corral.error").info("to the file")
    assert log_file.read_text() == "corral.error|INFO|to the file\n"


def test_log_config_dict(tmp_path: Path) -> None:
    """A dict passed as log_config (programmatic API) is applied with dictConfig."""
    log_file = tmp_path / "corral.log"
    configure_logging(Config(app="x:y", log_config=_file_config(log_file)))
    logging.getLogger("corral.error").warning("dict")
    assert log_file.read_text() == "corral.error|WARNING|dict\n"


#: uvicorn 0.54's own LOGGING_CONFIG written as YAML, with a marker in both formats so
#: the test can tell its lines from corral's defaults.
UVICORN_YAML = """\
version: 1
disable_existing_loggers: false
formatters:
  default:
    (): uvicorn.logging.DefaultFormatter
    fmt: "%(levelprefix)s [yaml] %(message)s"
    use_colors: null
  access:
    (): uvicorn.logging.AccessFormatter
    fmt: '%(levelprefix)s [yaml] %(client_addr)s - "%(request_line)s" %(status_code)s'
handlers:
  default:
    formatter: default
    class: logging.StreamHandler
    stream: ext://sys.stderr
  access:
    formatter: access
    class: logging.StreamHandler
    stream: ext://sys.stdout
loggers:
  uvicorn:
    handlers: [default]
    level: INFO
    propagate: false
  uvicorn.error:
    level: INFO
  uvicorn.access:
    handlers: [access]
    level: INFO
    propagate: false
"""


def test_uvicorn_yaml_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A YAML config written for uvicorn (its logger and formatter names) configures
    corral's loggers and prints uvicorn's lines, with no warning."""
    config_file = tmp_path / "logging.yaml"
    config_file.write_text(UVICORN_YAML)
    configure_logging(Config(app="x:y", log_config=str(config_file)))
    logging.getLogger("corral.error").info("Started server process [%d]", 42)
    logging.getLogger("corral.access").info(ACCESS_FORMAT, *ACCESS_ARGS)
    out, err = capsys.readouterr()
    assert err == "INFO:     [yaml] Started server process [42]\n"
    assert out == 'INFO:     [yaml] 127.0.0.1:53144 - "GET / HTTP/1.1" 200 OK\n'


@pytest.mark.parametrize(
    ("qualname", "formatter", "line"),
    [
        ("corral", "", "INFO from ini\n"),
        ("uvicorn.error", "class=uvicorn.logging.DefaultFormatter\n", "INFO:     from ini\n"),
    ],
    ids=["corral", "uvicorn"],
)
def test_log_config_ini(tmp_path: Path, qualname: str, formatter: str, line: str) -> None:
    """--log-config FILE.ini is applied with fileConfig; uvicorn's logger (qualname=) and
    formatter class names in it work too."""
    log_file = tmp_path / "corral.log"
    config_file = tmp_path / "logging.ini"
    fmt = "%(levelprefix)s" if formatter else "%(levelname)s"
    config_file.write_text(
        "[loggers]\nkeys=root,server\n\n"
        "[handlers]\nkeys=file\n\n"
        "[formatters]\nkeys=plain\n\n"
        "[logger_root]\nlevel=WARNING\nhandlers=\n\n"
        f"[logger_server]\nlevel=INFO\nhandlers=file\nqualname={qualname}\npropagate=0\n\n"
        "[handler_file]\nclass=FileHandler\nformatter=plain\n"
        f"args=({str(log_file)!r},)\n\n"
        f"[formatter_plain]\nformat={fmt} %(message)s\n{formatter}"
    )
    configure_logging(Config(app="x:y", log_config=str(config_file)))
    logging.getLogger("corral.error").info("from ini")
    assert log_file.read_text() == line


def test_corral_name_wins_over_its_uvicorn_alias(tmp_path: Path) -> None:
    """A config naming both corral.error and uvicorn.error: corral.error's entry applies."""
    log_file = tmp_path / "corral.log"
    config = _file_config(log_file)
    config["loggers"] = {
        "corral.error": {"handlers": ["file"], "level": "INFO", "propagate": False},
        "uvicorn.error": {"level": "CRITICAL"},
    }
    configure_logging(Config(app="x:y", log_config=config))
    logging.getLogger("corral.error").info("kept")
    assert log_file.read_text() == "corral.error|INFO|kept\n"
    logging.getLogger("uvicorn.error").setLevel(logging.NOTSET)


def test_config_for_no_corral_logger_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A config that configures none of corral's loggers (under either name) says so."""
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "loggers": {"myapp": {"level": "INFO"}},
    }
    with caplog.at_level(logging.WARNING, logger="corral.error"):
        configure_logging(Config(app="x:y", log_config=config))
    warnings = [r.getMessage() for r in caplog.records if r.name == "corral.error"]
    assert warnings == [
        "log_config configures none of corral's loggers (corral, corral.error,"
        " corral.access, or uvicorn's names for them); their lines go to the root"
        " logger's handlers"
    ]
    caplog.clear()
    configure_logging(Config(app="x:y", log_config=_file_config(tmp_path / "x.log")))
    assert not [r for r in caplog.records if r.name == "corral.error"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.json", None, "no such file"),
        ("broken.json", "{not json", "cannot read"),
        ("wrong.json", '{"version": 99}', "invalid logging configuration"),
        ("list.json", "[1, 2]", "dictConfig mapping"),
    ],
)
def test_bad_log_config(tmp_path: Path, name: str, content: str | None, message: str) -> None:
    """A missing or invalid log config is a ConfigError naming --log-config."""
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message) as info:
        configure_logging(Config(app="x:y", log_config=str(path)))
    assert info.value.option == "--log-config"


def test_reopen_logs_after_rotation(tmp_path: Path) -> None:
    """reopen_logs() makes FileHandlers write to a fresh file after logrotate moved theirs."""
    log_file = tmp_path / "corral.log"
    configure_logging(Config(app="x:y", log_config=_file_config(log_file)))
    logger = logging.getLogger("corral.error")
    logger.info("before")
    os.rename(log_file, tmp_path / "corral.log.1")
    assert reopen_logs() >= 1
    logger.info("after")
    assert (tmp_path / "corral.log.1").read_text() == "corral.error|INFO|before\n"
    assert log_file.read_text() == "corral.error|INFO|after\n"


def test_ensure_logging_respects_existing_setup(capsys: pytest.CaptureFixture[str]) -> None:
    """ensure_logging() configures corral's defaults only when nothing configured logging."""
    from corral.logging import ensure_logging

    root = logging.getLogger()
    saved = root.handlers
    root.handlers = []
    try:
        assert ensure_logging(Config(app="x:y", log_level="warning")) is True
        assert ensure_logging() is False  # now configured: left alone
        logging.getLogger("corral.error").warning("shown")
        logging.getLogger("corral.error").info("hidden by --log-level warning")
        assert capsys.readouterr().err == "WARNING:  shown\n"
    finally:
        root.handlers = saved


EMBED = """
import asyncio, socket
import corral

async def app(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

async def main():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.setblocking(False)
    server = corral.Server(corral.Config(app=app, lifespan="off"))
    started = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(server.serve([sock], on_started=lambda: started.set_result(1)))
    await asyncio.wait_for(started, 10)
    reader, writer = await asyncio.open_connection(*sock.getsockname())
    writer.write(b"GET /x HTTP/1.1\\r\\nHost: t\\r\\nConnection: close\\r\\n\\r\\n")
    await reader.read()
    server.should_exit = True
    await asyncio.wait_for(task, 10)

asyncio.run(main())
"""


def test_embedded_server_logs_like_uvicorn(tmp_path: Path) -> None:
    """corral.Server embedded without any logging setup still prints the lifecycle lines on
    stderr and access lines on stdout, as uvicorn.Server does."""
    import subprocess
    import sys

    script = tmp_path / "embed.py"
    script.write_text(EMBED)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30, check=True
    )
    assert "Started server process" in done.stderr
    assert "Finished server process" in done.stderr
    assert '"GET /x HTTP/1.1" 200 OK' in done.stdout
