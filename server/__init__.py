"""corral: a supervised pre-fork ASGI server.

The public API mirrors uvicorn's: ``corral.run(app, **settings)``, ``corral.Config`` and
``corral.Server(config).serve()``. The worker and supervisor packages are imported lazily,
only when a server actually runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from corral._version import __version__
from corral.config import Config
from corral.errors import AppLoadError, ConfigError, CorralError, ExitCode, StartupError

if TYPE_CHECKING:
    from corral.worker.serving import Server

__all__ = [
    "AppLoadError",
    "Config",
    "ConfigError",
    "CorralError",
    "ExitCode",
    "Server",
    "StartupError",
    "__version__",
    "run",
]


def run(app: Any, **settings: Any) -> ExitCode:
    """Serve ``app`` (an ASGI app or a "module:attr" string) until stopped.

    Takes the same settings as :class:`Config`. Returns the exit code instead of exiting,
    so an embedding program decides what to do with it.
    """
    from corral import sizing
    from corral.main import serve_config

    sizing.resolve(settings)  # workers="auto", limit_worker_memory="20%" or "1GiB"
    return serve_config(Config(app=app, **settings))


def __getattr__(name: str) -> Any:
    if name == "Server":
        from corral.worker.serving import Server

        return Server
    raise AttributeError(f"module 'corral' has no attribute {name!r}")
