"""Shared by the network-edge tests: an app that reports its scope, and a threaded Server.

:func:`serve` runs a real corral Server (its own listeners from the Config, so --bind,
--uds, IPv6 and TLS all go through the production code) in a background thread on the
chosen loop and parser, and returns once it accepts connections.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvloop
from corral.config import Config
from corral.listeners import Listener, close_listeners, open_listeners
from corral.worker.serving import Server

STACKS = [
    ("asyncio", "httptools"),
    ("asyncio", "h11"),
    ("uvloop", "httptools"),
    ("uvloop", "h11"),
]
DEADLINE = 10.0


def _describe(scope: dict[str, Any]) -> bytes:
    headers = dict(scope["headers"])
    report = {
        "type": scope["type"],
        "client": list(scope["client"]) if scope["client"] else None,
        "scheme": scope["scheme"],
        "host": headers.get(b"host", b"").decode("latin-1"),
        "tls": scope.get("extensions", {}).get("tls"),
    }
    return json.dumps(report).encode()


async def scope_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """HTTP: answers the scope's client, scheme, Host and TLS extension as JSON.
    WebSocket: accepts and sends the same JSON as a text message, then closes."""
    if scope["type"] == "http":
        body = _describe(scope)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})
    elif scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": _describe(scope).decode()})
        await send({"type": "websocket.close", "code": 1000})


@dataclass
class Running:
    server: Server
    listeners: list[Listener]
    thread: threading.Thread | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def url(self, index: int = 0) -> str:
        return self.listeners[index].url

    def port(self, index: int = 0) -> int:
        port: int = self.listeners[index].sock.getsockname()[1]
        return port


@contextmanager
def serve(loop_kind: str, http_kind: str, **settings: Any) -> Iterator[Running]:
    """Serve :func:`scope_app` with ``settings``; stop against a deadline afterwards."""
    settings.setdefault("lifespan", "off")
    settings.setdefault("port", 0)
    config = Config(app=scope_app, loop=loop_kind, http=http_kind, **settings)
    listeners = open_listeners(config)
    running = Running(Server(config, scope_app), listeners)

    def main() -> None:
        loop = uvloop.new_event_loop() if loop_kind == "uvloop" else asyncio.new_event_loop()
        try:
            sockets = [item.sock for item in listeners]
            loop.run_until_complete(running.server.serve(sockets, running.ready.set))
        except BaseException as exc:
            running.error = exc
        finally:
            running.ready.set()
            loop.close()

    running.thread = threading.Thread(target=main, name="corral-edge-server", daemon=True)
    running.thread.start()
    try:
        if not running.ready.wait(DEADLINE) or running.error is not None:
            raise AssertionError(f"server did not start: {running.error!r}")
        yield running
    finally:
        running.server.request_stop()
        running.thread.join(DEADLINE)
        close_listeners(listeners)
        if running.thread.is_alive():
            raise AssertionError("server did not stop within the deadline")
