"""Find the user's application from "module:attr" and make it an ASGI 3 callable.

Every failure is an :class:`AppLoadError` (exit 3) that says what was tried. An exception
raised by the user's own module while it is imported is shown with its traceback, trimmed to
the user's frames, because that is a bug in their code rather than in the APP string.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import traceback
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from corral.errors import AppLoadError

if TYPE_CHECKING:
    from corral.config import Config

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: How many sys.path entries a "module not found" error shows.
SYS_PATH_HEAD = 5


class ASGI2Adapter:
    """Runs an ASGI 2 app (``app(scope)`` returns ``instance(receive, send)``) as ASGI 3."""

    def __init__(self, app: Callable[[Scope], Callable[[Receive, Send], Awaitable[None]]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        instance = self.app(scope)
        await instance(receive, send)


_IMPORTLIB_DIR = os.path.dirname(os.path.abspath(importlib.__file__ or ""))


def _is_machinery(filename: str) -> bool:
    """Frames of this module and of the import system, which say nothing about the bug."""
    if filename.startswith("<frozen importlib"):
        return True
    path = os.path.abspath(filename)
    return path == os.path.abspath(__file__) or os.path.dirname(path) == _IMPORTLIB_DIR


def _user_traceback(exc: BaseException) -> str:
    """The exception's traceback without corral's and importlib's own frames."""
    kept = [f for f in traceback.extract_tb(exc.__traceback__) if not _is_machinery(f.filename)]
    lines = ["Traceback (most recent call last):\n"]
    lines += traceback.format_list(kept)
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines).rstrip()


def _import_module(module_name: str, import_string: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            head = ", ".join(repr(p) for p in sys.path[:SYS_PATH_HEAD])
            more = ", ..." if len(sys.path) > SYS_PATH_HEAD else ""
            raise AppLoadError(
                f"Could not import module {module_name!r} (from APP {import_string!r}):"
                f" no module named {missing!r}. Working directory: {os.getcwd()}."
                f" sys.path: [{head}{more}]. Use --app-dir to add the directory containing it."
            ) from None
        raise AppLoadError(
            f"Error while importing {module_name!r}:\n{_user_traceback(exc)}"
        ) from None
    except (Exception, SystemExit) as exc:
        raise AppLoadError(
            f"Error while importing {module_name!r}:\n{_user_traceback(exc)}"
        ) from None


def import_from_string(import_string: str) -> Any:
    """Import "module:attr.sub" and return the object."""
    module_name, sep, attrs = import_string.partition(":")
    well_formed = all(part.isidentifier() for part in [*module_name.split("."), *attrs.split(".")])
    if not sep or not well_formed:
        raise AppLoadError(
            f'Import string "{import_string}" must be in format "<module>:<attribute>",'
            " e.g. main:app"
        )
    obj = _import_module(module_name, import_string)
    path = module_name
    for attr in attrs.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            candidates = [name for name in dir(obj) if not name.startswith("_")]
            import difflib  # the error path only

            close = difflib.get_close_matches(attr, candidates, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise AppLoadError(
                f'Attribute "{attr}" not found in "{path}" (from APP "{import_string}").{hint}'
            ) from None
        path = f"{path}:{attr}" if path == module_name else f"{path}.{attr}"
    return obj


def _accepts(target: Any, count: int) -> bool | None:
    """Whether ``target`` can be called with ``count`` positional args (None: unknowable)."""
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return None
    try:
        signature.bind(*([None] * count))
    except TypeError:
        return False
    return True


def detect_interface(app: Any) -> str:
    """Pick "asgi3" or "asgi2" from the app's call signature.

    ASGI 3 apps take (scope, receive, send); ASGI 2 apps take (scope) and return the
    per-connection callable. When the signature can't be read, the uvicorn rule applies:
    a coroutine function (or a class with __await__) is ASGI 3, anything else ASGI 2.
    """
    if _accepts(app, 3):
        return "asgi3"
    if _accepts(app, 1):
        return "asgi2"
    if inspect.isclass(app):
        return "asgi3" if hasattr(app, "__await__") else "asgi2"
    call = app if inspect.isfunction(app) else getattr(app, "__call__", None)  # noqa: B004
    return "asgi3" if inspect.iscoroutinefunction(call) else "asgi2"


def _looks_like_factory(app: Any) -> bool:
    """A callable that takes no arguments and can't take ASGI's: an app factory.

    Decided from the signature alone, so user code is never called to find out.
    """
    return _accepts(app, 0) is True and not _accepts(app, 1) and not _accepts(app, 3)


def _describe(app: Any) -> str:
    return getattr(app, "__qualname__", None) or type(app).__name__


def load_app(config: Config) -> ASGIApp:
    """Return the configured app as an ASGI 3 callable, or raise AppLoadError."""
    target = config.app
    name = target if isinstance(target, str) else _describe(target)
    if isinstance(target, str):
        # First on sys.path, so the user's module wins over a same-named installed one.
        app_dir = os.path.abspath(config.app_dir or ".")
        if not sys.path or sys.path[0] != app_dir:
            sys.path.insert(0, app_dir)
        target = import_from_string(target)

    if config.factory:
        if not callable(target):
            raise AppLoadError(f"APP {name!r} is not callable, so it can't be an app factory")
        try:
            target = target()
        except Exception as exc:
            raise AppLoadError(
                f"Error while calling the app factory {name!r}:\n{_user_traceback(exc)}"
            ) from None
        if not callable(target):
            raise AppLoadError(
                f"The app factory {name!r} returned {type(target).__name__}, not an ASGI app"
            )
    elif callable(target) and _looks_like_factory(target):
        raise AppLoadError(
            f"APP {name!r} takes no arguments, but an ASGI app takes (scope, receive, send):"
            " it looks like an application factory. Run with --factory to call it and serve"
            " what it returns."
        )

    if not callable(target):
        raise AppLoadError(
            f"APP {name!r} is not callable (it is a {type(target).__name__}); an ASGI app is"
            " a callable taking (scope, receive, send)"
        )

    interface = config.interface
    if interface == "auto":
        interface = detect_interface(target)
    if interface == "asgi2":
        return ASGI2Adapter(target)
    app: ASGIApp = target
    return app
