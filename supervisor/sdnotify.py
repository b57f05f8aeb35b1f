"""sd_notify without libsystemd: tell the service manager about readiness, reloads and stops.

systemd hands a service the address of a datagram socket in ``NOTIFY_SOCKET`` (a path, or an
abstract name spelled with a leading ``@``) and, when ``WatchdogSec=`` is set, the watchdog
period in ``WATCHDOG_USEC``. Messages are newline-separated ``KEY=VALUE`` assignments in one
datagram. Without ``NOTIFY_SOCKET`` every call here does nothing, so callers never check.

The :class:`Notifier` keeps the "what to send when" logic (state transitions, watchdog timing,
timeout extensions) separate from the socket, so it is tested with a fake clock and transport.
How the master and the single process drive it is in :mod:`corral.supervisor.systemd`.
"""

from __future__ import annotations

import enum
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, MutableMapping

logger = logging.getLogger("corral.error")

#: Variables systemd sets for the notify protocol. They are removed from ``os.environ`` once
#: read so the application's own subprocesses don't speak for corral.
NOTIFY_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")

# A timeout extension is sent with this much slack beyond corral's own deadline for the phase,
# so that corral's bounded timeouts always fire before systemd's kill does.
EXTEND_MARGIN = 5.0
# While a boot or drain is in progress the extension is repeated this often, so systemd hears
# from corral regularly even when one long deadline covers the whole phase.
EXTEND_RESEND = 2.0

Transport = Callable[[bytes], None]

#: This process's notifier once made from ``os.environ`` (see :meth:`Notifier.from_environ`).
_process_notifier: Notifier | None = None


class NotifyState(enum.Enum):
    """What systemd has last been told about the service."""

    STARTING = "starting"
    READY = "ready"
    RELOADING = "reloading"
    STOPPING = "stopping"


class NotifyTransitionError(RuntimeError):
    """A notification that makes no sense in the current state (e.g. RELOADING while stopping)."""


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds: the clock systemd compares ``MONOTONIC_USEC`` with."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def socket_address(value: str) -> str | bytes:
    """Translate ``NOTIFY_SOCKET`` into a socket address; ``@name`` is the abstract ``\\0name``."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    raise ValueError(f"unsupported NOTIFY_SOCKET address {value!r}")


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of ``WATCHDOG_USEC``), or None when not asked.

    ``WATCHDOG_PID``, when set, names the one process the watchdog is meant for.
    """
    raw = environ.get("WATCHDOG_USEC", "")
    try:
        usec = int(raw)
    except ValueError:
        return None
    if usec <= 0:
        return None
    owner = environ.get("WATCHDOG_PID", "")
    if owner:
        try:
            if int(owner) != pid:
                return None
        except ValueError:
            return None
    return usec / 2 / 1_000_000


def status_text(ready: int, total: int, generation: int, recent_restarts: int) -> str:
    """The STATUS= line: workers ready, the generation and restarts in the recent window."""
    restarts = "restart" if recent_restarts == 1 else "restarts"
    return (
        f"{ready}/{total} workers ready, generation {generation},"
        f" {recent_restarts} recent {restarts}"
    )


class DatagramTransport:
    """Sends each message as one datagram to the notify socket, reconnecting lazily.

    A send that fails is logged once and otherwise ignored: losing a notification must never
    take the server down (systemd then times the unit out, which is the right outcome).
    """

    def __init__(self, address: str | bytes) -> None:
        self.address = address
        self._sock: socket.socket | None = None
        self._warned = False

    def __call__(self, message: bytes) -> None:
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.sendto(message, self.address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                logger.warning("Could not notify systemd at %r: %s", self.address, exc)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class Notifier:
    """The service's side of the notify protocol.

    Each method records the new state and sends only what systemd needs: ``ready()`` called
    again while already READY sends nothing, so the master may call it whenever it sees the
    full generation ready. Without a transport nothing is sent, but the state still moves, so
    behaviour is identical with and without systemd.
    """

    def __init__(
        self,
        transport: Transport | None = None,
        watchdog: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        monotonic_usec: Callable[[], int] = monotonic_usec,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.transport = transport
        self.state = NotifyState.STARTING
        self.watchdog = watchdog
        self._clock = clock
        self._monotonic_usec = monotonic_usec
        self._next_ping = clock() if watchdog is not None else None
        self._last_status: str | None = None
        self._extended_until: float | None = None
        self._next_extend: float | None = None
        #: The notify variables as read, so a re-executed master can be given them back.
        self.saved_environ: dict[str, str] = dict(environ or {})

    @classmethod
    def from_environ(
        cls,
        environ: MutableMapping[str, str] | None = None,
        pid: int | None = None,
        unset: bool = True,
    ) -> Notifier:
        """A notifier from ``NOTIFY_SOCKET``/``WATCHDOG_*``, which are removed when ``unset``.

        Without ``environ`` it is this process's notifier, read from ``os.environ`` once and
        shared with the module-level helpers (:func:`notify_ready` and friends).
        """
        global _process_notifier
        if environ is None and _process_notifier is not None:
            return _process_notifier  # this process's variables were read (and removed) already
        env = os.environ if environ is None else environ
        saved = {name: env[name] for name in NOTIFY_VARIABLES if name in env}
        if unset:
            for name in NOTIFY_VARIABLES:
                env.pop(name, None)
        made = cls(environ=saved)
        raw = saved.get("NOTIFY_SOCKET", "")
        if raw:
            try:
                address = socket_address(raw)
            except ValueError as exc:
                logger.warning("Ignoring NOTIFY_SOCKET: %s", exc)
            else:
                interval = watchdog_interval(saved, os.getpid() if pid is None else pid)
                made = cls(DatagramTransport(address), watchdog=interval, environ=saved)
        if environ is None:
            _process_notifier = made
        return made

    @property
    def enabled(self) -> bool:
        return self.transport is not None

    def now(self) -> float:
        """The clock deadlines given to :meth:`extend_until` are read on."""
        return self._clock()

    def send(self, *assignments: str) -> None:
        """Send ``KEY=VALUE`` assignments together in one datagram."""
        if self.transport is not None and assignments:
            self.transport("\n".join(assignments).encode())

    # --- lifecycle -------------------------------------------------------------------
    def ready(self, status: str | None = None) -> bool:
        """Say READY=1 (startup done, or a reload finished). Returns whether it was sent."""
        if self.state is NotifyState.STOPPING:
            raise NotifyTransitionError("READY=1 after STOPPING=1")
        if self.state is NotifyState.READY:
            if status is not None:
                self.status(status)
            return False
        self.state = NotifyState.READY
        self._extended_until = self._next_extend = None
        self.send("READY=1", *self._status_lines(status))
        return True

    def reloading(self, status: str | None = None) -> bool:
        """Say RELOADING=1 with MONOTONIC_USEC in the same datagram, as systemd requires."""
        if self.state in (NotifyState.STARTING, NotifyState.STOPPING):
            raise NotifyTransitionError(f"RELOADING=1 while {self.state.value}")
        if self.state is NotifyState.RELOADING:
            return False
        self.state = NotifyState.RELOADING
        self._extended_until = self._next_extend = None
        lines = ["RELOADING=1", f"MONOTONIC_USEC={self._monotonic_usec()}"]
        self.send(*lines, *self._status_lines(status))
        return True

    def stopping(self, status: str | None = None) -> bool:
        """Say STOPPING=1 once, when shutdown begins."""
        if self.state is NotifyState.STOPPING:
            return False
        self.state = NotifyState.STOPPING
        self._extended_until = self._next_extend = None
        self.send("STOPPING=1", *self._status_lines(status))
        return True

    def status(self, text: str) -> bool:
        """Send STATUS= when the text changed since the last one."""
        lines = self._status_lines(text)
        self.send(*lines)
        return bool(lines)

    def _status_lines(self, text: str | None) -> list[str]:
        if text is None or text == self._last_status:
            return []
        self._last_status = text
        return [f"STATUS={text}"]

    # --- timeouts --------------------------------------------------------------------
    def extend_timeout(self, usec: int) -> None:
        """Ask systemd for ``usec`` more microseconds in the current phase (start or stop)."""
        self.send(f"EXTEND_TIMEOUT_USEC={max(0, int(usec))}")

    def extend_until(self, deadline: float | None) -> bool:
        """Keep systemd's start/stop timeout from firing before ``deadline`` (on our clock).

        The caller passes its own bound for the phase that is still making progress (the
        slowest booting worker's boot deadline, or the latest drain deadline), or None when
        nothing is in progress. The extension is sent when that bound moves later, and again
        every EXTEND_RESEND seconds until it passes, each time covering what is left plus a
        margin: systemd keeps waiting exactly as long as corral's own bounds allow. Nothing is
        sent in READY, where the extension would apply to ``RuntimeMaxSec=`` instead.
        """
        if deadline is None or self.state is NotifyState.READY:
            self._extended_until = None
            self._next_extend = None
            return False
        now = self._clock()
        moved = self._extended_until is None or deadline > self._extended_until
        due = self._next_extend is not None and now >= self._next_extend
        if not moved and not due:
            return False
        self._extended_until = deadline
        if now >= deadline:
            self._next_extend = None  # past our own bound: the caller kills, no more time
            return False
        self._next_extend = now + EXTEND_RESEND
        remaining = deadline - now + EXTEND_MARGIN
        self.extend_timeout(int(remaining * 1_000_000))
        return True

    # --- watchdog --------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """When the next watchdog ping or extension is due (for the master loop's timeout)."""
        if not self.enabled:
            return None
        due = [t for t in (self._next_ping, self._next_extend) if t is not None]
        return min(due) if due else None

    def tick(self) -> bool:
        """Send WATCHDOG=1 if it is due. Call from the master loop on every turn."""
        if self._next_ping is None or self.watchdog is None or not self.enabled:
            return False
        now = self._clock()
        if now < self._next_ping:
            return False
        self.send("WATCHDOG=1")
        self._next_ping = now + self.watchdog
        return True

    def close(self) -> None:
        if isinstance(self.transport, DatagramTransport):
            self.transport.close()


def notifier() -> Notifier:
    """This process's notifier, created from the environment on first use."""
    return Notifier.from_environ()


def notify_ready(status: str | None = None) -> bool:
    return notifier().ready(status)


def notify_reloading(status: str | None = None) -> bool:
    return notifier().reloading(status)


def notify_stopping(status: str | None = None) -> bool:
    return notifier().stopping(status)


def status(text: str) -> bool:
    return notifier().status(text)


def watchdog_ping() -> bool:
    return notifier().tick()


def extend_timeout(usec: int) -> None:
    notifier().extend_timeout(usec)
