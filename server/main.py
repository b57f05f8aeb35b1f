"""``serve_config``: the one entry both ``corral.run()`` and the CLI go through.

It applies --env-file, configures logging, opens the listeners and hands over to the single
serving process or to the supervising master. Every failure becomes an :class:`ExitCode`;
nothing here calls ``sys.exit`` (only ``corral.cli.main`` does).
"""

from __future__ import annotations

import io
import logging
import logging.config

from corral import daemon, fdlimit
from corral.config import Config
from corral.errors import ConfigError, CorralError, ExitCode
from corral.listeners import close_listeners, open_listeners
from corral.logging import configure_logging, default_logging_config

logger = logging.getLogger("corral.error")


def load_env_file(path: str) -> None:
    """Load a dotenv file into ``os.environ`` with python-dotenv, exactly as uvicorn does.

    Variables already set in the environment win (``override=False``). A missing or
    unreadable file, or a line python-dotenv cannot parse (which it would skip with a
    warning), is a :class:`ConfigError` naming --env-file and the line.
    """
    from dotenv import load_dotenv  # only with --env-file
    from dotenv.parser import parse_stream

    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ConfigError("--env-file", f"cannot read {path}: {reason}") from None
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            raise ConfigError(
                "--env-file",
                f"{path}, line {binding.original.line}: python-dotenv cannot parse"
                f" {binding.original.string.strip()!r}",
            )
    load_dotenv(stream=io.StringIO(text), override=False)


def serve_config(config: Config) -> ExitCode:
    """Serve ``config`` until stopped; returns the process exit code.

    Order: env file, logging, umask (it shapes the UNIX socket file), listeners, pidfile
    (still privileged), privilege drop, and only then the app, so no app code runs as root.
    """
    env_error: CorralError | None = None
    try:
        if config.env_file is not None:
            # Loaded before logging is configured: the file may set NO_COLOR.
            load_env_file(config.env_file)
    except CorralError as exc:
        env_error = exc
    try:
        configure_logging(config)
    except CorralError as exc:
        logging.config.dictConfig(default_logging_config(config.use_colors))
        env_error = env_error or exc
    if config.env_file is not None:
        logger.info("Loading environment from '%s'", config.env_file)
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
    warning = fdlimit.low_limit_warning(config, *fdlimit.raise_soft_limit())
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
                from corral.worker.edge.accept import Edge

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
