"""The ASGI ``http.response.pathsend`` extension: the server sends a file as the body.

An app that only names the file (Starlette's ``FileResponse`` does when the
extension is offered) spares itself reading the file in a thread pool and handing the
chunks over one ``send()`` at a time. Corral reads the file in large pieces: on the event
loop while the data is in the page cache (``RWF_NOWAIT`` says so without blocking), and in
a thread when it would have to wait for the disk, so a cold file never stalls the other
connections. The response goes through the same framing, flow control and Content-Length
checks as any other body.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from corral.worker.asgi.cycle import RequestCycle

#: Bytes read per piece: a few times the transport's 64 KiB high-water mark, so a file
#: goes out in few writes while memory per connection stays bounded by flow control.
PIECE = 262144

#: What a server that supports the extension puts in the scope's ``extensions``.
EXTENSION = "http.response.pathsend"


#: preadv2's "fail rather than wait for the disk" flag (Linux 4.14+), None elsewhere.
_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)
#: errnos that mean the file system cannot answer RWF_NOWAIT at all.
_NOWAIT_UNSUPPORTED = {errno.EOPNOTSUPP, errno.EINVAL}
#: Where the probe's byte lands (its value is never used; sharing it is harmless).
_PROBE = bytearray(1)


class PathsendError(RuntimeError):
    """The app's ``http.response.pathsend`` message can't be carried out."""


async def read_piece(fd: int, size: int, offset: int) -> bytes:
    """Up to ``size`` bytes at ``offset``: on the loop when the piece's last byte is in the
    page cache (readahead fills a file's pages in order, so the rest of it is too), else
    in a thread. The probe is one 1-byte ``RWF_NOWAIT`` read: it never waits for a disk."""
    if _NOWAIT is not None:
        try:
            os.preadv(fd, [_PROBE], offset + size - 1, _NOWAIT)
        except BlockingIOError:
            pass  # not cached: the disk would be waited for
        except OSError as exc:
            if exc.errno not in _NOWAIT_UNSUPPORTED:
                raise
        else:
            return os.pread(fd, size, offset)
    return await asyncio.get_running_loop().run_in_executor(None, os.pread, fd, size, offset)


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
    from corral.worker.asgi.cycle import ResponseState  # cycle imports this module

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
    try:
        if not _frames_itself(cycle.headers):
            cycle.headers = [*cycle.headers, (b"content-length", b"%d" % info.st_size)]
        remaining = 0 if cycle.no_body else info.st_size
        offset = 0
        while True:
            piece = await read_piece(fd, min(PIECE, remaining), offset) if remaining > 0 else b""
            offset += len(piece)
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
    finally:
        os.close(fd)
