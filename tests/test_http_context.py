"""Which contextvars an app task sees: never another request's; none with --reset-contextvars."""

from __future__ import annotations

import contextvars
import threading
from typing import Any

from tests.conftest import RawClient, get

MARK: contextvars.ContextVar[str] = contextvars.ContextVar("corral_test_mark", default="unset")


async def marking_app(scope: Any, receive: Any, send: Any) -> None:
    """Answers with the mark it found, then marks its own context with its path and reads
    the whole body (large bodies make the server pause and resume reading meanwhile)."""
    seen = MARK.get()
    MARK.set(scope["path"])
    if scope["type"] == "http":
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        body = seen.encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def test_request_context_does_not_leak_into_the_next(http_server):
    """A request that set a contextvar while reading a large body (so the server resumed
    reading from inside its task) leaves nothing behind for the next request."""
    server = http_server(marking_app)
    size = 2 * 1024 * 1024
    with RawClient(server.port) as raw:
        head = b"POST /first HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size
        sender = threading.Thread(target=raw.send, args=(head + b"x" * size,), daemon=True)
        sender.start()
        assert raw.read_response().body == b"unset"
        sender.join(10)
        for path in ("/second", "/third"):
            raw.send(get(path))
            assert raw.read_response().body == b"unset"


def test_pipelined_request_does_not_inherit_context(http_server):
    """The next pipelined request is started when the previous response completes, from
    inside that request's task; it still starts from the server's context."""
    server = http_server(marking_app)
    with RawClient(server.port) as raw:
        raw.send(get("/a") + get("/b") + get("/c"))
        assert [raw.read_response().body for _ in range(3)] == [b"unset"] * 3
