"""The ASGI ``http.response.pathsend`` extension: the server sends a file as the body.

An app that only names the file (Starlette's ``FileResponse`` does when the
extension is offered) spares itself reading the file in a thread pool and handing the
chunks over one ``send()`` at a time. Corral reads the file in large pieces on the event
loop, as nginx does without ``aio``: page-cache reads are quick, and the response goes
through the same framing, flow control and Content-Length checks as any other body.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from corral.worker.cycle import RequestCycle

#: Bytes read per piece: a few times the transport's 64 KiB high-water mark, so a file
#: goes out in few writes while memory per connection stays bounded by flow control.
PIECE = 262144

#: What a server that supports the extension puts in the scope's ``extensions``.
EXTENSION = "http.response.pathsend"


class PathsendError(RuntimeError):
    """The app's ``http.response.pathsend`` message can't be carried out."""


def _frames_itself(headers: Any) -> bool:
    """Did the app set Content-Length or Transfer-Encoding (then corral adds neither)?"""
    for name, _ in headers:
        lowered = bytes(name).lower()
        if lowered == b"content-length" or lowered == b"transfer-encoding":
            return True
    return False


async def send_path(cycle: RequestCycle, message: Any) -> None:
    """Send the file named in ``message`` as the whole body of the started response.

    Without a Content-Length (or Transfer-Encoding) from the app, the file's size becomes
    the Content-Length. A HEAD request gets the head only. A file that shrinks while it is
    sent ends the response short, which closes the connection like any short body.
    """
    from corral.worker.cycle import ResponseState  # cycle imports this module

    path = message.get("path")
    if not isinstance(path, str) or not os.path.isabs(path):
        raise PathsendError(f"'http.response.pathsend' needs an absolute path, got {path!r}")
    # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below).
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise PathsendError(f"'http.response.pathsend': {path!r} is not a regular file")
    with open(fd, "rb", buffering=0) as file:
        if not _frames_itself(cycle.headers):
            cycle.headers = [*cycle.headers, (b"content-length", b"%d" % info.st_size)]
        remaining = 0 if cycle.no_body else info.st_size
        while True:
            piece = file.read(min(PIECE, remaining)) if remaining > 0 else b""
            remaining = remaining - len(piece) if piece else 0
            await cycle.send(
                {"type": "http.response.body", "body": piece, "more_body": remaining > 0}
            )
            if remaining <= 0:
                return
            if cycle.resp is ResponseState.DISCARDING:
                # Corral answered instead (a response header was refused): end the
                # discarded body now rather than read the rest of the file for nothing.
                await cycle.send({"type": "http.response.body", "body": b""})
                return
