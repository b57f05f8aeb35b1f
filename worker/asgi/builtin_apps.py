"""Responses corral gives without calling the user's app: overload 503 and the health path."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from corral.worker.clientlog import Kind, client_log

if TYPE_CHECKING:
    from corral.worker.asgi.types import ASGIReceive, ASGISend, Scope
    from corral.worker.state import ServerState

_TEXT = (b"content-type", b"text/plain; charset=utf-8")


async def overloaded_app(scope: Scope, receive: ASGIReceive, send: ASGISend) -> None:
    """Answers 503 with Connection: close once ``--limit-concurrency`` is reached."""
    client_log(Kind.OVER_CONCURRENCY, logging.WARNING, "Exceeded concurrency limit.")
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [_TEXT, (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": b"Service Unavailable"})


class HealthCheck:
    """The ``--health-path`` answer: 200 while serving, 503 once the process is stopping."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: ASGIReceive, send: ASGISend) -> None:
        status, body = (503, b"draining") if self.state.draining else (200, b"OK")
        await send({"type": "http.response.start", "status": status, "headers": [_TEXT]})
        await send({"type": "http.response.body", "body": body})
