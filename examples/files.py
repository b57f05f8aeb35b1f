"""Static files through the ASGI ``http.response.pathsend`` extension.

Serves the files in this directory: ``/`` lists them, ``/NAME`` sends one. When the server
offers pathsend (corral does), the app names the file and the server sends it; otherwise
it falls back to reading the file itself. Run it from the repository root:

    corral examples.files:app
    curl http://127.0.0.1:8000/hello.py
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
PIECE = 65536


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """List the directory at ``/``; send ``/NAME`` with pathsend when the server offers it."""
    if scope["type"] != "http":
        return  # no lifespan handling: with --lifespan auto corral carries on without it
    name = scope["path"].lstrip("/")
    if not name:
        listing = "".join(f"{path.name}\n" for path in sorted(ROOT.iterdir()) if path.is_file())
        await _respond(send, 200, listing.encode())
        return
    path = (ROOT / name).resolve()
    if path.parent != ROOT or not path.is_file():  # no "..", no subdirectories
        await _respond(send, 404, b"not found\n")
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(path.stat().st_size).encode()),
            ],
        }
    )
    if "http.response.pathsend" in scope.get("extensions", {}):
        await send({"type": "http.response.pathsend", "path": str(path)})
        return
    with path.open("rb") as file:  # a server without the extension: send it ourselves
        while piece := file.read(PIECE):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def _respond(send: Any, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8")],
        }
    )
    await send({"type": "http.response.body", "body": body})
