"""The master's signal inbox: handlers that only record, and a wake-up fd for the loop.

``signal.set_wakeup_fd`` makes the C-level handler write a byte to a pipe the master's
selector watches, so a signal wakes the loop even while it waits in ``select``. The Python
handler appends the signal number to a list and does nothing else; the loop acts on it.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable
from typing import Any


class SignalInbox:
    """Records signals for the master loop; :attr:`fileno` becomes readable on arrival."""

    def __init__(self, signals: Iterable[int]) -> None:
        self.signals = tuple(signals)
        self.pending: list[int] = []
        self._read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._previous: dict[int, Any] = {}

    @property
    def fileno(self) -> int:
        return self._read_fd

    def _record(self, signum: int, frame: object) -> None:
        """The only work done in signal context: remember which signal arrived."""
        self.pending.append(signum)

    def install(self) -> None:
        signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._record)
        # A master re-executed in place starts with these blocked (see pool.reexec_in_place):
        # a signal that arrived during the exec is delivered now, to the handlers above.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, self.signals)

    def take(self) -> list[int]:
        """Signals recorded since the last call, oldest first; empties the wake-up pipe."""
        try:
            while os.read(self._read_fd, 512):
                pass
        except BlockingIOError:
            pass
        taken, self.pending = self.pending, []
        return taken

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        signal.set_wakeup_fd(-1)

    def close(self) -> None:
        """Close the pipe (in the master at exit, or in a freshly forked worker)."""
        for fd in (self._read_fd, self._write_fd):
            try:
                os.close(fd)
            except OSError:
                pass
