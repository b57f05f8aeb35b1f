"""A worker imports only what it serves with: what it may never use waits for first use.

Each module a worker imports costs every worker its memory (and the master its startup).
A real ``corral --workers 1`` serves an app that reports ``sys.modules``: after an HTTP
request the worker has not imported the WebSocket stack, the parser libraries, or
what only an option needs (--limit-memory, --env-file, a YAML --log-config, a request-limit
jitter, a mistyped app name); after a WebSocket upgrade it has the WebSocket stack.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests import test_cli_e2e
from tests.conftest import DEADLINE, wait_for
from tests.test_cli_e2e import BANNER, write_app

start = test_cli_e2e.start  # the fixture that runs a corral subprocess

MODULES_APP = """
import sys

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
    elif scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await receive()
    else:
        body = "\\n".join(sorted(sys.modules)).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
"""

#: Top-level packages a worker serving plain HTTP must not have imported.
NOT_YET = {
    "websockets",  # until the first WebSocket upgrade
    "h11",  # corral's own parser serves; httptools and h11 are test oracles
    "httptools",
    "psutil",  # --limit-memory only (the master's sampler)
    "dotenv",  # --env-file only
    "yaml",  # a YAML --log-config only
    "email",  # the Date header is formatted by corral
    "difflib",  # "did you mean" for a mistyped app attribute
    "random",  # --limit-max-requests-jitter only
}


def imported(port: int) -> set[str] | None:
    """The worker's top-level packages; None while no worker answers yet."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/", timeout=DEADLINE).text
    except httpx.HTTPError:
        return None
    return {name.split(".")[0] for name in text.split("\n")}


def test_a_fresh_worker_imports_only_what_it_serves(start: Any, tmp_path: Path) -> None:
    write_app(tmp_path, MODULES_APP, name="modules")
    server = start("--workers", "1", app="modules:app")
    port = int(server.wait_for(BANNER).group(1))
    before = wait_for(lambda: imported(port), message="the worker to answer")
    assert "corral" in before
    assert not before & NOT_YET, sorted(before & NOT_YET)
    with connect(f"ws://127.0.0.1:{port}/", open_timeout=DEADLINE):
        pass
    after = imported(port)
    assert after is not None and "websockets" in after
    # websockets itself brings email and random (its HTTP parsing, uuid).
    assert not after & (NOT_YET - {"websockets", "email", "random"}), sorted(after & NOT_YET)
    server.proc.send_signal(signal.SIGTERM)
    code, stderr = server.finish()
    assert code == 0, stderr


@pytest.mark.parametrize("timestamp", [0, 951782400, 1700000000.5, 4102444799])
def test_date_header_matches_the_rfc_format(timestamp: float) -> None:
    """corral's own IMF-fixdate equals the stdlib's (which the worker no longer imports)."""
    from email.utils import formatdate

    from corral.worker.dates import format_http_date

    assert format_http_date(timestamp) == formatdate(timestamp, usegmt=True).encode()
