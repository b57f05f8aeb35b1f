"""Socket activation: adopt the listening sockets systemd (or any compatible launcher) passes.

The protocol: the launcher opens the sockets, places them at fd 3, 4, ... and sets
``LISTEN_PID`` (the process meant to take them), ``LISTEN_FDS`` (how many) and optionally
``LISTEN_FDNAMES`` (colon-separated names, ``FileDescriptorName=`` in the unit). A process whose
pid differs from ``LISTEN_PID`` must ignore them: it inherited the variables from its parent.

After reading, the variables leave ``os.environ`` so the application's own child processes
don't think the sockets are theirs, and every inherited descriptor is marked close-on-exec so
nothing leaks into those children. Forked workers still share the sockets: close-on-exec only
matters when a program is executed.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass

from corral.errors import ConfigError

#: The first passed descriptor (SD_LISTEN_FDS_START); 0-2 are stdio.
LISTEN_FDS_START = 3
ACTIVATION_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


@dataclass(frozen=True)
class PassedFd:
    """One descriptor the launcher passed, with its name ("unknown" when none was given)."""

    fd: int
    name: str


@dataclass
class ActivatedSocket:
    """An adopted listening socket and its name (``corral.listeners`` describes it for the log,
    since only the configuration says whether it speaks TLS)."""

    sock: socket.socket
    name: str


def parse_environ(environ: Mapping[str, str], pid: int) -> list[PassedFd]:
    """The descriptors meant for process ``pid``; empty when nothing was passed to it.

    Pure: reads the mapping only. A ``LISTEN_PID`` naming another process, or no
    ``LISTEN_FDS``, means no activation. Malformed values are a configuration error.
    """
    raw_pid = environ.get("LISTEN_PID", "").strip()
    raw_count = environ.get("LISTEN_FDS", "").strip()
    if not raw_pid or not raw_count:
        return []
    try:
        target = int(raw_pid)
    except ValueError:
        raise ConfigError("LISTEN_PID", f"{raw_pid!r} is not a process id") from None
    if target != pid:
        return []
    try:
        count = int(raw_count)
    except ValueError:
        raise ConfigError("LISTEN_FDS", f"{raw_count!r} is not a number") from None
    if count < 0:
        raise ConfigError("LISTEN_FDS", "must be zero or more")
    raw_names = environ.get("LISTEN_FDNAMES")
    names = raw_names.split(":") if raw_names else []
    if names and len(names) != count:
        raise ConfigError("LISTEN_FDNAMES", f"has {len(names)} names for {count} descriptors")
    return [PassedFd(LISTEN_FDS_START + i, names[i] if names else "unknown") for i in range(count)]


def adopt(passed: PassedFd) -> ActivatedSocket:
    """Wrap one passed descriptor as a socket object; it must be a listening stream socket.

    The family and type are read from the descriptor itself, so TCP (v4 or v6) and UNIX
    sockets are told apart without the launcher saying which is which.
    """
    try:
        sock = socket.socket(fileno=passed.fd)
    except OSError as exc:
        raise ConfigError(
            "LISTEN_FDS", f"fd {passed.fd} ({passed.name}) is not a socket: {exc.strerror}"
        ) from None
    problem = None
    if sock.type != socket.SOCK_STREAM:
        problem = "is not a stream socket (ListenDatagram= is not supported)"
    elif sock.family not in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX):
        problem = f"has unsupported address family {sock.family!r}"
    elif not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        problem = "is not listening"
    if problem is not None:
        sock.detach()  # leave the descriptor as it was; it is not ours to close
        raise ConfigError("LISTEN_FDS", f"fd {passed.fd} ({passed.name}) {problem}")
    sock.setblocking(False)
    sock.set_inheritable(False)
    return ActivatedSocket(sock, passed.name)


def open_fds() -> list[int]:
    """Every descriptor this process has open (from /proc/self/fd, or /dev/fd elsewhere)."""
    for directory in ("/proc/self/fd", "/dev/fd"):
        try:
            entries = os.listdir(directory)
        except OSError:
            continue
        # listdir itself opened one descriptor, now closed again; fstat filters it out.
        fds = []
        for entry in entries:
            fd = int(entry)
            try:
                os.fstat(fd)
            except OSError:
                continue
            fds.append(fd)
        return sorted(fds)
    return []


def seal_inherited_fds(keep: Iterable[int] = ()) -> list[int]:
    """Mark every descriptor from 3 up close-on-exec, except ``keep``; returns those changed.

    Whatever a launcher left open must not reach programs the application executes.
    """
    kept = set(keep)
    changed = []
    for fd in open_fds():
        if fd < LISTEN_FDS_START or fd in kept:
            continue
        try:
            if os.get_inheritable(fd):
                os.set_inheritable(fd, False)
                changed.append(fd)
        except OSError:
            continue
    return changed


def take_activated_sockets(
    environ: MutableMapping[str, str] | None = None, pid: int | None = None
) -> list[ActivatedSocket]:
    """Adopt the sockets passed to this process and clear the variables; [] when none were.

    Called once by the process that opens the listeners (the master, or the single server).
    """
    env = os.environ if environ is None else environ
    passed = parse_environ(env, os.getpid() if pid is None else pid)
    if env.get("LISTEN_PID") is not None or env.get("LISTEN_FDS") is not None:
        for name in ACTIVATION_VARIABLES:
            env.pop(name, None)
    if not passed:
        return []
    sockets = [adopt(item) for item in passed]
    seal_inherited_fds()
    return sockets
