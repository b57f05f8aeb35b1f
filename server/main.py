"""``serve_config``: the one entry both ``corral.run()`` and the CLI go through.

It applies --env-file, configures logging, opens the listeners and hands over to the single
serving process or to the supervising master. Every failure becomes an :class:`ExitCode`;
nothing here calls ``sys.exit`` (only ``corral.cli.main`` does).
"""

from __future__ import annotations

import logging
import logging.config
import os
import re
from collections.abc import Iterator, MutableMapping

from corral import daemon
from corral.config import Config
from corral.errors import ConfigError, CorralError, ExitCode
from corral.listeners import close_listeners, open_listeners
from corral.logging import configure_logging, default_logging_config

logger = logging.getLogger("corral.error")

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_EXPAND = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def _expand(value: str, known: MutableMapping[str, str]) -> str:
    """Replace ``${NAME}`` and ``${NAME:-default}`` from the environment or earlier lines."""
    return _EXPAND.sub(lambda m: known.get(m.group(1)) or (m.group(2) or ""), value)


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), value)


def _entries(text: str, path: str) -> Iterator[tuple[str, str, bool]]:
    """Yield (key, raw value, expandable) for each assignment in a dotenv file."""
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        number = index + 1
        line = lines[index].strip()
        index += 1
        if not line or line.startswith("#"):
            continue
        if line.startswith("export ") or line.startswith("export\t"):
            line = line[len("export") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _KEY.fullmatch(key):
            raise ConfigError("--env-file", f"{path}, line {number}: expected KEY=VALUE")
        value = value.lstrip()
        quote = value[:1]
        if quote in ("'", '"'):
            body = value[1:]
            # A quoted value may span lines; it ends at the first unescaped closing quote.
            while True:
                end = _closing_quote(body, quote)
                if end >= 0 or index >= len(lines):
                    break
                body += "\n" + lines[index]
                index += 1
            if end < 0:
                raise ConfigError("--env-file", f"{path}, line {number}: unterminated {quote}")
            rest = body[end + 1 :].strip()
            if rest and not rest.startswith("#"):
                raise ConfigError(
                    "--env-file", f"{path}, line {number}: unexpected text after the quoted value"
                )
            body = body[:end]
            if quote == '"':
                yield key, _unescape(body), True
            else:
                yield key, body, False
        else:
            # Unquoted: a " #" starts a comment; surrounding whitespace is dropped.
            comment = re.search(r"\s#", value)
            if comment:
                value = value[: comment.start()]
            yield key, value.strip(), True


def _closing_quote(body: str, quote: str) -> int:
    escaped = False
    for position, char in enumerate(body):
        if escaped:
            escaped = False
        elif char == "\\" and quote == '"':
            escaped = True
        elif char == quote:
            return position
    return -1


def parse_env_file(path: str, environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Parse a dotenv file: KEY=VALUE lines, quotes, comments, ``export``, ``${VAR}``."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError("--env-file", f"cannot read {path}: {exc.strerror or exc}") from None
    base = os.environ if environ is None else environ
    values: dict[str, str] = {}
    for key, value, expandable in _entries(text, path):
        known = {**values, **base}
        values[key] = _expand(value, known) if expandable else value
    return values


def apply_env_file(path: str, environ: MutableMapping[str, str] | None = None) -> None:
    """Load a dotenv file into the environment; variables already set win, as with dotenv."""
    target = os.environ if environ is None else environ
    for key, value in parse_env_file(path, target).items():
        target.setdefault(key, value)


def serve_config(config: Config) -> ExitCode:
    """Serve ``config`` until stopped; returns the process exit code.

    Order: env file, logging, umask (it shapes the UNIX socket file), listeners, pidfile
    (still privileged), privilege drop, and only then the app, so no app code runs as root.
    """
    env_error: CorralError | None = None
    try:
        if config.env_file is not None:
            apply_env_file(config.env_file)
    except CorralError as exc:
        env_error = exc
    try:
        configure_logging(config)
    except CorralError as exc:
        logging.config.dictConfig(default_logging_config(config.use_colors))
        env_error = env_error or exc
    if env_error is not None:
        logger.error("%s", env_error)
        return env_error.exit_code
    try:
        return _serve(config)
    except CorralError as exc:
        logger.error("%s", exc)
        return exc.exit_code
    except KeyboardInterrupt:
        # Ctrl+C before the serving loop installed its own handlers (e.g. during import).
        return ExitCode.ERROR
    except Exception:
        logger.exception("Unexpected error; corral is stopping")
        return ExitCode.ERROR


def _serve(config: Config) -> ExitCode:
    warning = daemon.pid1_warning(config.supervised)
    if warning:
        logger.warning("%s", warning)
    identity = daemon.resolve_identity(config.user, config.group)
    daemon.apply_umask(config.umask)
    listeners = open_listeners(config)
    try:
        if config.pid is not None:
            daemon.write_pidfile(config.pid, owner=identity)
        try:
            daemon.drop_privileges(identity)
            if config.supervised:
                from corral.supervisor.master import run_master
                from corral.worker.edge import Edge

                # Fail fast (exit 2) on unusable TLS or proxy settings, as the user the
                # workers run as; each worker still builds its own context after the fork.
                Edge(config)
                return ExitCode(run_master(config, listeners))
            from corral.supervisor.systemd import single_process_notifier
            from corral.worker.process import run_single

            return ExitCode(run_single(config, listeners, notify=single_process_notifier(config)))
        finally:
            if config.pid is not None:
                daemon.remove_pidfile(config.pid)
    finally:
        close_listeners(listeners)
