"""A streamed response: the body is sent in pieces (chunked transfer encoding).

Run it from the repository root, then watch the lines arrive with `curl -N`:

    corral examples.streaming:app
"""

from __future__ import annotations

import asyncio
from typing import Any


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Send ten numbered lines, a tenth of a second apart (?count=N changes how many)."""
    if scope["type"] != "http":
        return  # no lifespan handling: with --lifespan auto corral carries on without it
    count = 10
    query = scope["query_string"].decode("latin-1")
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key == "count" and value.isdigit():
            count = min(int(value), 1000)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain; charset=utf-8")],
        }
    )
    for number in range(1, count + 1):
        await send(
            {"type": "http.response.body", "body": f"line {number}\n".encode(), "more_body": True}
        )
        await asyncio.sleep(0.1)
    await send({"type": "http.response.body", "body": b""})
