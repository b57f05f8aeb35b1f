"""ASGI apps for the WebSocket tests, and ``echo`` for Autobahn (``corral tests.ws_apps:echo``).

:class:`Recorder` is one app with a route per behaviour under test; it records what it saw
(disconnect codes, send failures) in :attr:`Recorder.events` so that tests running the
server in another thread can poll for them against a deadline.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from tests.apps import serve_lifespan

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def _plain(send: Send, body: bytes = b"plain http") -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _echo_loop(receive: Receive, send: Send) -> dict[str, Any]:
    """Echo every message until the disconnect, which it returns."""
    while True:
        message = await receive()
        if message["type"] == "websocket.receive":
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"]})
        elif message["type"] == "websocket.disconnect":
            return message


async def echo(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """Accept every WebSocket and echo each message (the Autobahn fuzzingclient target)."""
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await _echo_loop(receive, send)
    elif scope["type"] == "http":
        await _plain(send)
    elif scope["type"] == "lifespan":
        await serve_lifespan(receive, send)


class Recorder:
    """Routes by path; every route records its observations in :attr:`events`."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.calls = 0
        #: Set (from the server's loop) to let ``/no-read`` start receiving.
        self.release: asyncio.Event | None = None

    def seen(self, kind: str) -> list[Any]:
        return [value for name, value in self.events if name == kind]

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        if scope["type"] == "http":
            await _plain(send)
            return
        self.calls += 1
        route = scope["path"].strip("/") or "echo"
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        handler = getattr(self, "route_" + route.replace("-", "_"))
        try:
            await handler(scope, receive, send, query)
        except OSError as exc:
            self.events.append(("send_failed", type(exc).__name__))

    async def route_echo(self, scope: Any, receive: Receive, send: Send, query: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        self.events.append(("disconnect", await _echo_loop(receive, send)))

    async def route_scope(self, scope: Any, receive: Receive, send: Send, query: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        shown = {k: v for k, v in scope.items() if k not in ("headers", "state")}
        shown["query_string"] = scope["query_string"].decode()
        shown["raw_path"] = (scope.get("raw_path") or b"").decode()
        shown["has_state"] = isinstance(scope.get("state"), dict)
        await send({"type": "websocket.send", "text": json.dumps(shown)})
        await _echo_loop(receive, send)

    async def route_subprotocol(self, scope: Any, receive: Receive, send: Send, query: Any) -> None:
        await receive()
        offered = scope["subprotocols"]
        await send({"type": "websocket.accept", "subprotocol": offered[-1] if offered else None})
        await _echo_loop(receive, send)

    async def route_headers(self, scope: Any, receive: Receive, send: Send, query: Any) -> None:
        await receive()
        headers = [(b"x-corral-test", b"yes"), (b"set-cookie", b"a=1")]
        await send({"type": "websocket.accept", "headers": headers})
        await _echo_loop(receive, send)

    async def route_deny(self, scope: Any, receive: Receive, send: Send, query: Any) -> None:
        await receive()
        await send({"type": "websocket.close"})
        self.events.append(("after_deny", await receive()))

    async def route_custom_deny(self, scope: Any, receive: Receive, send: Send, query: Any) -> None:
        await receive()
        headers = [(b"content-type", b"text/plain"), (b"x-why", b"token")]
        await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": b"no ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"entry"})

    async def route_close(self, scope: Any, receive: Receive, send: Send, query: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await receive()  # wait for one message, then close with the code asked for
        code = int(query.get("code", 1000))
        await send({"type": "websocket.close", "code": code, "reason": query.get("reason", "")})
        self.events.append(("disconnect", await receive()))

    async def route_crash(self, scope: Any, receive: Receive, send: Send, query: Any) -> None:
        await receive()
        if query.get("when") == "open":
            await send({"type": "websocket.accept"})
            await receive()
        raise RuntimeError("boom (expected by the test)")

    async def route_no_read(self, scope: Any, receive: Receive, send: Send, query: Any) -> None:
        """Accept, then receive nothing until the test sets :attr:`release`."""
        await receive()
        await send({"type": "websocket.accept"})
        self.release = asyncio.Event()
        self.events.append(("accepted", True))
        await self.release.wait()
        self.events.append(("disconnect", await _echo_loop(receive, send)))

    async def route_flood(self, scope: Any, receive: Receive, send: Send, query: Any) -> None:
        """Send 64 KiB messages until sending fails."""
        await receive()
        await send({"type": "websocket.accept"})
        chunk = b"x" * 65536
        sent = 0
        while True:
            await send({"type": "websocket.send", "bytes": chunk})
            sent += 1
            self.events.append(("sent", sent))

    async def route_silent(self, scope: Any, receive: Receive, send: Send, query: Any) -> None:
        """Accept and wait for the disconnect without echoing."""
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.events.append(("disconnect", message))
                return
            self.events.append(("received", message))
