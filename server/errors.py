"""Exception tree and exit codes shared by the CLI, the master and the workers."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes, the same in every mode (uvicorn uses 3 for startup failure)."""

    OK = 0
    ERROR = 1
    USAGE = 2
    APP_FAILED = 3


class CorralError(Exception):
    """Base class for errors corral reports to the user without a traceback."""

    exit_code: ExitCode = ExitCode.ERROR


class ConfigError(CorralError):
    """A setting has an invalid value; the message names the option."""

    exit_code = ExitCode.USAGE

    def __init__(self, option: str, message: str) -> None:
        self.option = option
        super().__init__(f"Invalid value for '{option}': {message}")


class AppLoadError(CorralError):
    """The application could not be imported or built."""

    exit_code = ExitCode.APP_FAILED


class StartupError(CorralError):
    """The application's lifespan startup failed, or the server could not start serving."""

    exit_code = ExitCode.APP_FAILED
