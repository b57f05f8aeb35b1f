"""The worker <-> master channel protocol: pure encoding and decoding, no I/O.

Each worker holds one end of a ``socketpair(AF_UNIX, SOCK_STREAM)``; the master holds the
other. A stream socket is used (not datagrams) because its EOF is the signal both sides
rely on: the master sees a dying worker's end close, and a worker sees EOF when the master
dies, so it can exit by itself and nothing is orphaned.

Messages are single ASCII lines, ``VERB[ ARG]\\n``:

worker -> master
    ``BOOTING <pid>``      the worker process is alive and starting to load the app
    ``READY``              lifespan startup completed and the sockets are being served
    ``BEAT <requests>``    from a timer on the worker's event loop (a blocked loop stops
                           beating); carries the worker's total request count
    ``RETIRING <reason>``  a limit was reached (e.g. ``max-requests``); the worker keeps
                           serving until the master, with a replacement READY, drains it
    ``FATAL <code>``       boot failed; the process exits with ``code`` right after

master -> worker
    ``DRAIN restart``      stop accepting, finish in-flight work, exit (WebSockets 1012)
    ``DRAIN stop``         the same, for a server stop (WebSockets 1001)
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from enum import Enum

#: A line longer than this is a protocol error: every valid message is a few dozen bytes.
MAX_LINE = 256


class ChannelError(ValueError):
    """The peer sent bytes that are not a valid channel message."""


class Kind(Enum):
    """Every message verb, in both directions."""

    BOOTING = "BOOTING"
    READY = "READY"
    BEAT = "BEAT"
    RETIRING = "RETIRING"
    FATAL = "FATAL"
    DRAIN = "DRAIN"


#: Which verbs carry an argument, and whether it must be an integer.
_ARG: dict[Kind, str | None] = {
    Kind.BOOTING: "int",
    Kind.READY: None,
    Kind.BEAT: "int",
    Kind.RETIRING: "word",
    Kind.FATAL: "int",
    Kind.DRAIN: "word",
}

#: DRAIN's argument, and the only two values it may take.
DRAIN_RESTART = "restart"
DRAIN_STOP = "stop"


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded message; ``arg`` is "" for verbs without an argument."""

    kind: Kind
    arg: str = ""

    @property
    def number(self) -> int:
        """The integer argument of BOOTING, BEAT and FATAL."""
        return int(self.arg)


def encode(kind: Kind, arg: str | int | None = None) -> bytes:
    """The wire form of one message; raises ChannelError for a malformed argument."""
    spec = _ARG[kind]
    if spec is None:
        if arg not in (None, ""):
            raise ChannelError(f"{kind.value} takes no argument")
        return kind.value.encode("ascii") + b"\n"
    if arg is None:
        raise ChannelError(f"{kind.value} needs an argument")
    text = str(arg)
    _check_arg(kind, spec, text)
    line = f"{kind.value} {text}\n".encode("ascii")
    if len(line) > MAX_LINE:
        raise ChannelError(f"{kind.value} argument too long")
    return line


def booting(pid: int) -> bytes:
    return encode(Kind.BOOTING, pid)


def ready() -> bytes:
    return encode(Kind.READY)


def beat(requests: int) -> bytes:
    return encode(Kind.BEAT, requests)


def retiring(reason: str) -> bytes:
    return encode(Kind.RETIRING, reason)


def fatal(code: int) -> bytes:
    return encode(Kind.FATAL, code)


def drain(restart: bool) -> bytes:
    return encode(Kind.DRAIN, DRAIN_RESTART if restart else DRAIN_STOP)


def _check_arg(kind: Kind, spec: str, text: str) -> None:
    if spec == "int":
        if not (text.isascii() and text.lstrip("-").isdigit()):
            raise ChannelError(f"{kind.value} argument must be an integer, got {text!r}")
    elif not text or not text.isascii() or not text.isprintable() or " " in text:
        raise ChannelError(f"{kind.value} argument must be one printable word, got {text!r}")
    if kind is Kind.DRAIN and text not in (DRAIN_RESTART, DRAIN_STOP):
        raise ChannelError(f"DRAIN argument must be restart or stop, got {text!r}")


def parse_line(line: bytes) -> Message:
    """Decode one line (without its newline)."""
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise ChannelError("non-ASCII bytes on the channel") from None
    verb, _, arg = text.partition(" ")
    try:
        kind = Kind(verb)
    except ValueError:
        raise ChannelError(f"unknown message {verb!r}") from None
    spec = _ARG[kind]
    if spec is None:
        if arg:
            raise ChannelError(f"{verb} takes no argument")
    else:
        _check_arg(kind, spec, arg)
    return Message(kind, arg)


class Decoder:
    """Incremental decoder: feed it whatever ``recv`` returned, get whole messages back."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        """Messages completed by ``data``; raises ChannelError on garbage or an overlong line."""
        self._buffer += data
        messages = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                break
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            messages.append(parse_line(line))
        if len(self._buffer) > MAX_LINE:
            raise ChannelError("channel line too long")
        return messages

    def receive(self, sock: socket.socket) -> list[Message] | None:
        """Read what ``sock`` (non-blocking) has: its messages, [] if nothing yet, None at
        EOF or on a broken socket. Raises ChannelError on garbage."""
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return []
        except OSError:
            return None
        return self.feed(data) if data else None

    @property
    def pending(self) -> int:
        """Bytes of an incomplete trailing line (non-zero at EOF means a truncated message)."""
        return len(self._buffer)


def beat_interval(healthcheck_timeout: float) -> float:
    """Seconds between heartbeats: several beats fit in one health-check timeout, so one
    late timer tick never looks like a hang; capped at 1 s so the master's view is fresh."""
    return max(0.05, min(1.0, healthcheck_timeout / 5))
