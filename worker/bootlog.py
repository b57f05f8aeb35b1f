"""One traceback for a failed start: a booting worker's error lines wait for a verdict.

At the initial start the master forks all N workers at once. When the app cannot boot,
every one of them fails the same way at about the same moment, and N copies of the same
traceback would bury the one that matters. So a worker forked for the initial start holds
back its ERROR lines while it boots:

- once it is READY they are written (nothing was wrong with it, or not fatally);
- if it fails, it tries to take the one byte in the master's token pipe: the first sibling
  to fail gets it and writes its lines; the others find the pipe empty and drop theirs
  (the master halts on the first failure and stops them anyway).

The master creates the token with :func:`make_token` before its first fork and closes its
copy once any worker was READY, so workers forked later never hold anything back.
"""

from __future__ import annotations

import logging
import os

from corral.logging import all_handlers

_TOKEN = b"!"


def make_token() -> int:
    """A pipe holding one byte; returns its read end (the write end is closed at once)."""
    read_end, write_end = os.pipe()
    os.write(write_end, _TOKEN)
    os.close(write_end)
    os.set_blocking(read_end, False)
    return read_end


class _Holder(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.held: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            self.held.append(record)
            return False
        return True


_holder: _Holder | None = None
_token_fd: int | None = None


def hold(token_fd: int) -> None:
    """In a freshly forked worker: hold back ERROR lines until :func:`ready` or :func:`failed`."""
    global _holder, _token_fd
    _holder, _token_fd = _Holder(), token_fd
    for handler in all_handlers():
        handler.addFilter(_holder)


def _release(write: bool) -> None:
    global _holder, _token_fd
    holder, _holder = _holder, None
    if holder is None:
        return
    for handler in all_handlers():
        handler.removeFilter(holder)
    if _token_fd is not None:
        os.close(_token_fd)
        _token_fd = None
    if write:
        for record in holder.held:
            logging.getLogger(record.name).handle(record)


def ready() -> None:
    """The worker is READY: write what was held, and hold nothing more."""
    _release(write=True)


def failed() -> None:
    """The worker failed to boot: write what was held only if no sibling failed first."""
    if _holder is None or _token_fd is None:
        return
    try:
        first = os.read(_token_fd, 1) == _TOKEN
    except BlockingIOError:  # pragma: no cover - the write end is closed: EOF, not EAGAIN
        first = False
    _release(write=first)
