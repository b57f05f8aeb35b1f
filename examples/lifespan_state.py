"""Lifespan state: build shared resources once at startup, use them in every request.

The startup handler stores objects in ``scope["state"]``; corral hands each request a
shallow copy of that state. Run it from the repository root:

    corral examples.lifespan_state:app
"""

from __future__ import annotations

import time
from typing import Any


async def lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Create the shared state on startup and clean it up on shutdown."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            scope["state"]["started_at"] = time.time()
            scope["state"]["hits"] = {"count": 0}  # a mutable object is shared by requests
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            scope["state"].clear()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Report the uptime and how many requests this process has served."""
    if scope["type"] == "lifespan":
        await lifespan(scope, receive, send)
        return
    if scope["type"] != "http":
        return
    state = scope["state"]
    state["hits"]["count"] += 1
    uptime = time.time() - state["started_at"]
    body = f"up {uptime:.1f}s, {state['hits']['count']} requests served\n".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
