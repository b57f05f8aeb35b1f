"""Shared ASGI test apps. Other test modules may append their own apps here.

Apps that must be controlled from the test thread use :class:`Gate` (opened from any thread)
and record what they saw in :class:`Recorder` lists the test polls.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

Scope = dict[str, Any]
Receive = Any
Send = Any


class Gate:
    """An asyncio event the test thread can open; apps ``await gate.wait()``."""

    def __init__(self) -> None:
        self._opened = threading.Event()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self._lock = threading.Lock()
        self.entered = threading.Event()

    async def wait(self) -> None:
        self.entered.set()
        event = asyncio.Event()
        with self._lock:
            if self._opened.is_set():
                return
            self._waiters.append((asyncio.get_running_loop(), event))
        await event.wait()

    def open(self) -> None:
        with self._lock:
            self._opened.set()
            for loop, event in self._waiters:
                loop.call_soon_threadsafe(event.set)
            self._waiters.clear()


class Recorder:
    """A thread-safe list of things an app saw."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._lock = threading.Lock()

    def add(self, item: Any) -> None:
        with self._lock:
            self.items.append(item)

    def __contains__(self, item: Any) -> bool:
        with self._lock:
            return item in self.items

    def snapshot(self) -> list[Any]:
        with self._lock:
            return list(self.items)


async def read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise OSError("client went away")
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body


async def respond(
    send: Send,
    body: bytes,
    status: int = 200,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": headers if headers is not None else [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    """200 "Hello, world!" with an explicit Content-Length."""
    body = b"Hello, world!"
    await respond(send, body, headers=[(b"content-length", str(len(body)).encode())])


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Echo the whole request body (the path and query go in headers)."""
    body = await read_body(receive)
    await respond(
        send,
        body,
        headers=[
            (b"x-path", scope["path"].encode()),
            (b"x-query", scope["query_string"]),
            (b"x-method", scope["method"].encode()),
        ],
    )


async def echo_streaming(scope: Scope, receive: Receive, send: Send) -> None:
    """Echo each request body piece as a response body piece (chunked response)."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    while True:
        message = await receive()
        more = message.get("more_body", False)
        await send(
            {"type": "http.response.body", "body": message.get("body", b""), "more_body": more}
        )
        if not more:
            return


async def chunks(scope: Scope, receive: Receive, send: Send) -> None:
    """Three body pieces without a Content-Length."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for piece in (b"one,", b"two,", b"three"):
        await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def with_status(status: int, body: bytes = b"not allowed here") -> Any:
    """An app answering ``status`` and (wrongly, for 204/304) a body."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, body, status=status)

    return app


def streamer(total: int, piece: int = 65536, recorder: Recorder | None = None) -> Any:
    """Streams ``total`` bytes in ``piece``-sized messages; records how many it sent."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        sent = 0
        block = b"x" * piece
        while sent < total:
            data = block[: total - sent]
            await send({"type": "http.response.body", "body": data, "more_body": True})
            sent += len(data)
            if recorder is not None:
                recorder.add(sent)
        await send({"type": "http.response.body", "body": b""})

    return app


def gated(gate: Gate, body: bytes = b"done", recorder: Recorder | None = None) -> Any:
    """Waits for ``gate`` before answering; records the paths it started on."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if recorder is not None:
            recorder.add(("start", scope["path"]))
        if scope["path"] != "/fast":
            await gate.wait()
        await respond(send, body + scope["path"].encode())
        if recorder is not None:
            recorder.add(("end", scope["path"]))

    return app


def gated_reader(gate: Gate) -> Any:
    """Reads nothing until ``gate`` opens, then echoes the length of the whole body."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await gate.wait()
        body = await read_body(receive)
        await respond(send, str(len(body)).encode())

    return app


def disconnect_watcher(recorder: Recorder, *, respond_first: bool = False) -> Any:
    """Records every message until http.disconnect (optionally after a first body piece)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if respond_first:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"first", "more_body": True})
        while True:
            message = await receive()
            recorder.add(message["type"])
            if message["type"] == "http.disconnect":
                break
        if respond_first:
            try:
                await send({"type": "http.response.body", "body": b"late", "more_body": True})
            except OSError:
                recorder.add("send-raised")

    return app


def failing(stage: str) -> Any:
    """An app that misbehaves at ``stage`` (see the cases in test_http_errors)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if stage == "before-start":
            raise RuntimeError("boom before start")
        if stage == "no-response":
            return
        if stage == "body-before-start":
            await send({"type": "http.response.body", "body": b"x"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        if stage == "after-start":
            raise RuntimeError("boom after start")
        if stage == "start-only":
            return
        if stage == "double-start":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            return
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        if stage == "mid-body":
            raise RuntimeError("boom mid body")
        if stage == "unfinished":
            return
        await send({"type": "http.response.body", "body": b""})
        if stage == "after-complete":
            raise RuntimeError("boom after complete")
        if stage == "send-after-complete":
            await send({"type": "http.response.body", "body": b"more"})

    return app


def headers_app(headers: list[tuple[bytes, bytes]], body: bytes = b"ok") -> Any:
    """Answers with exactly these (possibly invalid) headers."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def scope_recorder(recorder: Recorder) -> Any:
    """Records each request's scope and answers 200."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        recorder.add(dict(scope))
        await read_body(receive)
        await respond(send, b"ok")

    return app


# --- lifespan ---------------------------------------------------------------------------
async def serve_lifespan(receive: Receive, send: Send) -> None:
    """The plain lifespan protocol: startup and shutdown both complete."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def lifespan_app(
    *,
    fail_startup: str | None = None,
    fail_shutdown: str | None = None,
    events: Recorder | None = None,
) -> Any:
    """Supports lifespan: puts ``{"greeting": "hi"}`` in the state; can fail either phase."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if events is not None:
                    events.add(message["type"])
                if message["type"] == "lifespan.startup":
                    if fail_startup is not None:
                        await send({"type": "lifespan.startup.failed", "message": fail_startup})
                        return
                    scope["state"]["greeting"] = "hi"
                    await send({"type": "lifespan.startup.complete"})
                else:
                    if fail_shutdown is not None:
                        await send({"type": "lifespan.shutdown.failed", "message": fail_shutdown})
                    else:
                        await send({"type": "lifespan.shutdown.complete"})
                    return
        await respond(send, str(scope["state"].get("greeting")).encode())

    return app


async def no_lifespan(scope: Scope, receive: Receive, send: Send) -> None:
    """An HTTP-only app that rejects lifespan scopes, as many simple apps do."""
    if scope["type"] != "http":
        raise RuntimeError(f"unsupported scope {scope['type']}")
    await respond(send, b"plain")


async def hang(scope: Scope, receive: Receive, send: Send) -> None:
    """Never answers (HTTP) and ignores lifespan: for forced-stop tests."""
    if scope["type"] == "lifespan":
        raise RuntimeError("no lifespan here")
    await asyncio.Event().wait()


#: Module-level apps for subprocess tests that load "tests.apps:NAME".
startup_fails = lifespan_app(fail_startup="database unreachable")
with_lifespan = lifespan_app()


async def echo_path_only(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers with the path at once, never reading the request body."""
    await respond(send, scope["path"].encode())
