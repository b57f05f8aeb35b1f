"""The ASGI lifespan protocol: startup before serving, state into requests, shutdown after."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
from corral.config import Config
from corral.errors import CorralError, StartupError
from corral.worker.asgi.lifespan import Lifespan, LifespanPhase
from corral.worker.serving import Server

from tests import apps
from tests.apps import Recorder
from tests.conftest import new_loop, start_server


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "corral.error"]


def test_state_reaches_requests(http_server):
    """What the app puts in the lifespan state appears in each request's scope."""
    server = http_server(apps.lifespan_app(), lifespan="on")
    assert httpx.get(server.url()).text == "hi"


def test_request_state_is_a_shallow_copy(http_server):
    """Each request gets its own copy of the state: one request's changes don't leak."""

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            await apps.lifespan_app()(scope, receive, send)
            return
        seen = scope["state"].get("touched", "no")
        scope["state"]["touched"] = "yes"
        await apps.respond(send, seen.encode())

    server = http_server(app, lifespan="on")
    assert [httpx.get(server.url()).text for _ in range(2)] == ["no", "no"]


def test_lifecycle_log_lines(stack, caplog):
    """Startup and shutdown log uvicorn's lifecycle lines word for word, in order."""
    caplog.set_level("INFO", logger="corral.error")
    server = start_server(apps.lifespan_app(), *stack, lifespan="on")
    server.stop()
    lines = _messages(caplog)
    expected = [
        "Started server process",
        "Waiting for application startup.",
        "Application startup complete.",
        "Shutting down",
        "Waiting for application shutdown.",
        "Application shutdown complete.",
        "Finished server process",
    ]
    found = [next(i for i, line in enumerate(lines) if line.startswith(e)) for e in expected]
    assert found == sorted(found)


def test_startup_failure_raises_with_app_message(stack, caplog):
    """lifespan.startup.failed raises StartupError carrying the app's message."""
    with pytest.raises(StartupError, match="database unreachable"):
        start_server(apps.startup_fails, *stack, lifespan="on")
    assert "database unreachable" in _messages(caplog)
    assert "Application startup failed. Exiting." in _messages(caplog)


def test_startup_failure_in_auto_mode_is_fatal_too(stack):
    """An app that supports lifespan and fails startup stops the server even in auto."""
    with pytest.raises(StartupError):
        start_server(apps.startup_fails, *stack, lifespan="auto")


def test_auto_accepts_app_without_lifespan(http_server, caplog):
    """--lifespan auto serves an app that raises on the lifespan scope."""
    caplog.set_level("INFO", logger="corral.error")
    server = http_server(apps.no_lifespan, lifespan="auto")
    assert httpx.get(server.url()).text == "plain"
    assert "ASGI 'lifespan' protocol appears unsupported." in _messages(caplog)


def test_on_requires_lifespan_support(stack):
    """--lifespan on fails startup for an app that can't do lifespan."""
    with pytest.raises(StartupError):
        start_server(apps.no_lifespan, *stack, lifespan="on")


def test_off_never_calls_lifespan(http_server):
    """--lifespan off never sends a lifespan scope."""
    events = Recorder()
    server = http_server(apps.lifespan_app(events=events), lifespan="off")
    assert httpx.get(server.url()).text == "None"
    server.stop()
    assert events.snapshot() == []


def test_shutdown_runs_after_serving(stack):
    """lifespan.shutdown reaches the app when the server stops."""
    events = Recorder()
    server = start_server(apps.lifespan_app(events=events), *stack, lifespan="on")
    assert events.snapshot() == ["lifespan.startup"]
    server.stop()
    assert events.snapshot() == ["lifespan.startup", "lifespan.shutdown"]


def test_shutdown_failure_is_logged(stack, caplog):
    """lifespan.shutdown.failed logs the app's message; the server still stops."""
    server = start_server(apps.lifespan_app(fail_shutdown="flush failed"), *stack, lifespan="on")
    server.stop()
    assert "flush failed" in _messages(caplog)
    assert "Application shutdown failed. Exiting." in _messages(caplog)


def test_shutdown_is_bounded():
    """A shutdown hook that never returns is cancelled after timeout_lifespan_shutdown."""

    async def app(scope, receive, send):
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await asyncio.Event().wait()

    async def main() -> LifespanPhase:
        lifespan = Lifespan(app, "on", {})
        await lifespan.startup()
        await lifespan.shutdown(timeout=0.05)
        return lifespan.phase

    assert asyncio.run(main()) is LifespanPhase.FAILED


def test_unexpected_lifespan_message_fails_startup():
    """A lifespan message out of place fails startup with a clear error."""

    async def app(scope, receive, send):
        await receive()
        await send({"type": "lifespan.shutdown.complete"})

    async def main() -> None:
        await Lifespan(app, "on", {}).startup()

    with pytest.raises(StartupError, match="Unexpected lifespan message"):
        asyncio.run(main())


def test_shutdown_runs_when_serving_fails_after_startup(stack):
    """If listening fails after lifespan startup, the app's shutdown still runs."""
    events = Recorder()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        app = apps.lifespan_app(events=events)
        config = Config(app=app, host="127.0.0.1", port=taken.getsockname()[1], lifespan="on")
        server = Server(config, app)
        loop = new_loop(stack[0])
        try:
            with pytest.raises(CorralError):
                loop.run_until_complete(server.serve())
        finally:
            loop.close()
    finally:
        taken.close()
    assert events.snapshot() == ["lifespan.startup", "lifespan.shutdown"]
