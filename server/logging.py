"""Logging setup: uvicorn's default format under corral's logger names.

Lifecycle lines go to ``corral.error`` (stderr), access lines to ``corral.access`` (stdout),
both as ``LEVEL:    message`` with the level padded the way uvicorn pads it, because deploy
scripts grep for these lines. Colour is used only on a terminal, or when asked for.
"""

from __future__ import annotations

import logging
import logging.config
import os
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TextIO

import click

if TYPE_CHECKING:
    from corral.config import Config
    from corral.listeners import Listener

TRACE_LEVEL = 5
logging.addLevelName(TRACE_LEVEL, "TRACE")

#: The loggers --log-level applies to (``corral.asgi`` carries the trace of ASGI messages).
CORRAL_LOGGERS = ("corral", "corral.error", "corral.access", "corral.asgi")

_LEVEL_COLOURS: dict[int, str] = {
    TRACE_LEVEL: "blue",
    logging.DEBUG: "cyan",
    logging.INFO: "green",
    logging.WARNING: "yellow",
    logging.ERROR: "red",
    logging.CRITICAL: "bright_red",
}

# "CRITICAL" is the longest level name; every prefix is padded to its width plus the colon.
_PREFIX_WIDTH = len("CRITICAL:")


def stream_wants_colour(stream: TextIO | None, use_colors: bool | None) -> bool:
    """Colour when forced on, never when forced off, else only on a TTY (and no NO_COLOR)."""
    if use_colors is not None:
        return use_colors
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


class LevelPrefixFormatter(logging.Formatter):
    """Adds ``%(levelprefix)s``: ``INFO:`` padded to a fixed width, coloured when enabled."""

    #: The stream whose terminal decides colour when ``stream`` is not given.
    default_stream = "stderr"

    def __init__(
        self,
        fmt: str | None = None,
        datefmt: str | None = None,
        style: Any = "%",
        use_colors: bool | None = None,
        stream: str | None = None,
    ) -> None:
        super().__init__(fmt=fmt, datefmt=datefmt, style=style)
        target = sys.stdout if (stream or self.default_stream) == "stdout" else sys.stderr
        self.use_colors = stream_wants_colour(target, use_colors)

    def level_prefix(self, record: logging.LogRecord) -> str:
        name = record.levelname
        padding = " " * max(0, _PREFIX_WIDTH - len(name) - 1)
        if self.use_colors:
            name = click.style(name, fg=_LEVEL_COLOURS.get(record.levelno))
        return f"{name}:{padding}"

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.levelprefix = self.level_prefix(record)
        return super().formatMessage(record)


#: uvicorn's name for the same formatter (a --log-config naming
#: ``uvicorn.logging.DefaultFormatter`` gets this one, see :mod:`corral.logconfig`).
DefaultFormatter = LevelPrefixFormatter

_STATUS_COLOURS = {"1": "bright_white", "2": "green", "3": "yellow", "4": "red", "5": "bright_red"}


class AccessFormatter(LevelPrefixFormatter):
    """Access lines; with colour, the request line is bold and the status coloured by class.

    The worker logs ``'%s - "%s %s HTTP/%s" %s'`` with (client, method, path, version, status).
    The record also gets uvicorn's access fields (``client_addr``, ``request_line``,
    ``status_code``), so access formats written for uvicorn's --log-config keep working.
    Colour is decided for stdout, where access lines go, unless told otherwise.
    """

    default_stream = "stdout"

    def format(self, record: logging.LogRecord) -> str:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5:
            client, method, path, version, status = args
            status_text = str(status)
            request_line = f"{method} {path} HTTP/{version}"
            if self.use_colors:
                record = logging.makeLogRecord(record.__dict__)
                record.args = (
                    client,
                    click.style(str(method), bold=True),
                    click.style(str(path), bold=True),
                    version,
                    click.style(status_text, fg=_STATUS_COLOURS.get(status_text[:1])),
                )
                request_line = click.style(request_line, bold=True)
                status_text = str(record.args[4])
            record.client_addr = client
            record.request_line = request_line
            record.status_code = status_text
        return super().format(record)


def default_logging_config(use_colors: bool | None) -> dict[str, Any]:
    """The dictConfig applied when no --log-config is given (uvicorn's defaults, renamed)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "default": {
                "()": "corral.logging.LevelPrefixFormatter",
                "fmt": "%(levelprefix)s %(message)s",
                "use_colors": use_colors,
                "stream": "stderr",
            },
            "access": {
                "()": "corral.logging.AccessFormatter",
                "fmt": "%(levelprefix)s %(message)s",
                "use_colors": use_colors,
                "stream": "stdout",
            },
        },
        "handlers": {
            "default": {
                "formatter": "default",
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
            },
            "access": {
                "formatter": "access",
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
            },
        },
        "loggers": {
            "corral": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "corral.error": {"level": "INFO"},
            "corral.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        },
    }


def configure_logging(config: Config) -> None:
    """Set up logging from --log-config (or the defaults), --log-level and --access-log."""
    if config.log_config is None:
        logging.config.dictConfig(default_logging_config(config.use_colors))
    else:
        from corral.logconfig import apply_log_config

        apply_log_config(config.log_config)
    if config.log_level is not None:
        level = logging.getLevelName(config.log_level.upper())
        for name in CORRAL_LOGGERS:
            logging.getLogger(name).setLevel(level)
    access = logging.getLogger("corral.access")
    if not config.access_log:
        # disabled makes isEnabledFor() False, so the worker skips building the line at all.
        access.handlers = []
        access.propagate = False
        access.disabled = True
    else:
        access.disabled = False


def ensure_logging(config: Config | None = None) -> bool:
    """Configure logging (from ``config``, else the defaults) unless something already did.

    "Already" means any handler on corral's loggers or on the root logger: an embedding
    program that set up its own logging keeps it. Used when an error must be reported
    before :func:`configure_logging` ran (e.g. a bad --env-file), and by embedders of
    ``corral.Server`` so lifecycle lines show as they do with uvicorn. Returns whether it
    configured anything.
    """
    names = ("", *CORRAL_LOGGERS)
    if any(logging.getLogger(name).handlers for name in names):
        return False
    if config is None:
        logging.config.dictConfig(default_logging_config(None))
    else:
        configure_logging(config)
    return True


def all_handlers() -> Iterable[logging.Handler]:
    """Every handler attached to any logger (the root and all named ones), each once."""
    seen: set[int] = set()
    loggers: list[logging.Logger] = [logging.getLogger()]
    loggers += [
        item
        for item in logging.Logger.manager.loggerDict.values()
        if isinstance(item, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if id(handler) not in seen:
                seen.add(id(handler))
                yield handler


def reopen_logs() -> int:
    """Reopen every FileHandler's file (SIGUSR1 after logrotate moved it); returns the count.

    Call it from the main loop, not from a signal handler: it takes the handlers' locks. A
    file that can't be reopened is logged and skipped; the process keeps serving.
    """
    reopened = 0
    for handler in all_handlers():
        if isinstance(handler, logging.FileHandler):
            handler.acquire()
            try:
                if handler.stream is not None:
                    handler.stream.close()
                handler.stream = handler._open()
                reopened += 1
            except OSError as exc:
                handler.stream = None  # FileHandler opens it again on the next record
                logging.getLogger("corral.error").error(
                    "Could not reopen log file %s: %s", handler.baseFilename, exc
                )
            finally:
                handler.release()
    return reopened


def banner_lines(listeners: Iterable[Listener]) -> list[str]:
    """One "corral running on ..." line per listener, as uvicorn prints it."""
    lines = []
    for listener in listeners:
        if listener.url.startswith("unix:"):
            where = f"unix socket {listener.url[len('unix:') :]}"
        else:
            where = listener.url
        lines.append(f"corral running on {where} (Press CTRL+C to quit)")
    return lines
