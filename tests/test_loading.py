"""App loading: "module:attr" imports, factories, interface detection and every error path."""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from corral.config import Config
from corral.errors import AppLoadError, ExitCode
from corral.loading import ASGI2Adapter, detect_interface, load_app

_counter = itertools.count()


@pytest.fixture(autouse=True)
def _restore_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))


def write_module(tmp_path: Path, source: str) -> str:
    """Write ``source`` as a uniquely named module in tmp_path; returns the module name."""
    name = f"corral_loading_case_{os.getpid()}_{next(_counter)}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    return name


def load(tmp_path: Path, target: str, **settings: Any) -> Any:
    return load_app(Config(app=target, app_dir=str(tmp_path), **settings))


ASGI3_APP = """
async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"asgi3"})
"""


async def call(app: Any) -> list[dict[str, Any]]:
    """Call an ASGI 3 app with an HTTP scope and collect what it sends."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http", "path": "/"}, receive, send)
    return sent


@pytest.mark.smoke
def test_loads_module_attribute(tmp_path: Path) -> None:
    """'module:attr' imports the module from --app-dir and returns the ASGI 3 app itself."""
    name = write_module(tmp_path, ASGI3_APP)
    app = load(tmp_path, f"{name}:app")
    assert app is sys.modules[name].app
    assert asyncio.run(call(app))[1]["body"] == b"asgi3"


def test_dotted_attribute(tmp_path: Path) -> None:
    """'module:a.b' walks attributes after the colon."""
    name = write_module(
        tmp_path,
        ASGI3_APP + "\nclass Holder:\n    inner = staticmethod(app)\n",
    )
    app = load(tmp_path, f"{name}:Holder.inner")
    assert asyncio.run(call(app))[1]["body"] == b"asgi3"


def test_app_object_is_used_as_is() -> None:
    """An app object (not a string) is returned unchanged, with no import."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    assert load_app(Config(app=app)) is app


def test_app_dir_defaults_to_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --app-dir the current directory is searched (console scripts lack it)."""
    name = write_module(tmp_path, ASGI3_APP)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert load_app(Config(app=f"{name}:app")) is sys.modules[name].app


@pytest.mark.smoke
@pytest.mark.parametrize("target", ["nocolon", ":app", "module:", "a:b:"])
def test_missing_colon_or_part(target: str) -> None:
    """An APP without both module and attribute says the expected format."""
    with pytest.raises(AppLoadError, match="<module>:<attribute>"):
        load_app(Config(app=target))


def test_missing_module_lists_what_was_tried(tmp_path: Path) -> None:
    """A module that can't be found names it, the working directory and the head of sys.path."""
    with pytest.raises(AppLoadError) as info:
        load(tmp_path, "corral_no_such_module_xyz:app")
    message = str(info.value)
    assert "corral_no_such_module_xyz" in message
    assert os.getcwd() in message
    assert repr(str(tmp_path)) in message
    assert "--app-dir" in message
    assert info.value.exit_code == ExitCode.APP_FAILED


def test_missing_parent_package(tmp_path: Path) -> None:
    """A dotted module whose package is missing is reported as not found, not as a bug."""
    with pytest.raises(AppLoadError, match=r"Could not import module 'corral_nopkg\.sub'"):
        load(tmp_path, "corral_nopkg.sub:app")


def test_missing_attribute_suggests_close_name(tmp_path: Path) -> None:
    """A missing attribute names attribute and module, and suggests a close match."""
    name = write_module(tmp_path, ASGI3_APP)
    with pytest.raises(AppLoadError) as info:
        load(tmp_path, f"{name}:ap")
    assert f'Attribute "ap" not found in "{name}"' in str(info.value)
    assert "Did you mean 'app'?" in str(info.value)


def test_missing_nested_attribute(tmp_path: Path) -> None:
    """A missing attribute deeper in a dotted path names where it was looked for."""
    name = write_module(tmp_path, ASGI3_APP + "\nclass Holder:\n    pass\n")
    with pytest.raises(AppLoadError, match=f'Attribute "nope" not found in "{name}:Holder"'):
        load(tmp_path, f"{name}:Holder.nope")


def test_not_callable(tmp_path: Path) -> None:
    """A non-callable attribute is refused, saying what it is."""
    name = write_module(tmp_path, "app = 42\n")
    with pytest.raises(AppLoadError, match="is not callable \\(it is a int\\)"):
        load(tmp_path, f"{name}:app")


@pytest.mark.smoke
def test_exception_in_user_module_shows_traceback(tmp_path: Path) -> None:
    """An exception raised while importing the user's module is shown with its traceback."""
    name = write_module(tmp_path, "x = 1\nraise RuntimeError('boom in module')\n")
    with pytest.raises(AppLoadError) as info:
        load(tmp_path, f"{name}:app")
    message = str(info.value)
    assert "Traceback (most recent call last)" in message
    assert f"{name}.py" in message and "line 2" in message
    assert "RuntimeError: boom in module" in message
    assert "importlib" not in message and "loading.py" not in message


def test_missing_import_inside_user_module_is_the_users_bug(tmp_path: Path) -> None:
    """A module the user's code imports that is missing is shown with a traceback."""
    name = write_module(tmp_path, "import corral_missing_dependency_xyz\n")
    with pytest.raises(AppLoadError) as info:
        load(tmp_path, f"{name}:app")
    message = str(info.value)
    assert "Traceback" in message
    assert "No module named 'corral_missing_dependency_xyz'" in message


def test_syntax_error_in_user_module(tmp_path: Path) -> None:
    """A syntax error in the user's module is reported with the file and line."""
    name = write_module(tmp_path, "def broken(:\n    pass\n")
    with pytest.raises(AppLoadError) as info:
        load(tmp_path, f"{name}:app")
    assert "SyntaxError" in str(info.value)
    assert f"{name}.py" in str(info.value)


def test_sys_exit_in_user_module(tmp_path: Path) -> None:
    """A module calling sys.exit() while imported becomes a load error, not an exit."""
    name = write_module(tmp_path, "import sys\nsys.exit(4)\n")
    with pytest.raises(AppLoadError, match="SystemExit"):
        load(tmp_path, f"{name}:app")


FACTORY = (
    ASGI3_APP
    + """
calls = []
def create_app():
    calls.append(1)
    return app
"""
)


def test_factory_is_called_with_flag(tmp_path: Path) -> None:
    """--factory calls the attribute once and serves what it returns."""
    name = write_module(tmp_path, FACTORY)
    app = load(tmp_path, f"{name}:create_app", factory=True)
    assert app is sys.modules[name].app
    assert sys.modules[name].calls == [1]


@pytest.mark.smoke
def test_factory_without_flag_is_refused_without_calling_it(tmp_path: Path) -> None:
    """A zero-argument callable without --factory is refused and never called."""
    name = write_module(tmp_path, FACTORY)
    with pytest.raises(AppLoadError, match="--factory"):
        load(tmp_path, f"{name}:create_app")
    assert sys.modules[name].calls == []


def test_factory_error_shows_traceback(tmp_path: Path) -> None:
    """An exception inside the factory is shown with the user's traceback."""
    name = write_module(tmp_path, "def create_app():\n    raise ValueError('bad settings')\n")
    with pytest.raises(AppLoadError) as info:
        load(tmp_path, f"{name}:create_app", factory=True)
    assert "ValueError: bad settings" in str(info.value)
    assert "line 2" in str(info.value)


def test_factory_returning_non_callable(tmp_path: Path) -> None:
    """A factory returning something that isn't an app is refused."""
    name = write_module(tmp_path, "def create_app():\n    return None\n")
    with pytest.raises(AppLoadError, match="returned NoneType"):
        load(tmp_path, f"{name}:create_app", factory=True)


ASGI2_APP = """
class App:
    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": self.scope["path"].encode()})
"""


def test_asgi2_class_is_detected_and_wrapped(tmp_path: Path) -> None:
    """An ASGI 2 app (a class taking scope) is wrapped into an ASGI 3 callable."""
    name = write_module(tmp_path, ASGI2_APP)
    app = load(tmp_path, f"{name}:App")
    assert isinstance(app, ASGI2Adapter)
    assert asyncio.run(call(app))[1]["body"] == b"/"


def test_explicit_interface_overrides_detection(tmp_path: Path) -> None:
    """--interface asgi3 takes the app as is, even when detection would say ASGI 2."""
    name = write_module(tmp_path, ASGI2_APP)
    app = load(tmp_path, f"{name}:App", interface="asgi3")
    assert app is sys.modules[name].App


class _Asgi3Instance:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        return None


class _Asgi2Class:
    def __init__(self, scope: Any) -> None:
        self.scope = scope


def _asgi2_function(scope: Any) -> Any:
    return None


async def _asgi3_function(scope: Any, receive: Any, send: Any) -> None:
    return None


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        (_Asgi3Instance(), "asgi3"),
        (_asgi3_function, "asgi3"),
        (_Asgi2Class, "asgi2"),
        (_asgi2_function, "asgi2"),
        (lambda *args: None, "asgi3"),
    ],
)
def test_detect_interface(app: Any, expected: str) -> None:
    """Interface detection reads the call signature: three arguments ASGI 3, one ASGI 2."""
    assert detect_interface(app) == expected


def test_wsgi_interface_is_refused() -> None:
    """--interface wsgi is a configuration error pointing to an adapter."""
    from corral.errors import ConfigError

    with pytest.raises(ConfigError, match="WSGIMiddleware"):
        Config(app="x:y", interface="wsgi")


ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("example", ["hello", "streaming", "lifespan_state"])
def test_examples_load_from_repository_root(example: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each example loads as examples.NAME:app from the repository root, as documented."""
    if not (ROOT / "examples" / f"{example}.py").exists():
        pytest.skip("needs the source checkout")
    monkeypatch.chdir(ROOT)
    app = load_app(Config(app=f"examples.{example}:app"))
    assert detect_interface(app) == "asgi3"
    doc = sys.modules[f"examples.{example}"].__doc__ or ""
    assert f"corral examples.{example}:app" in doc
