"""Listening sockets: TCP host/port, UNIX sockets, inherited fds and --bind specs.

The master (or the single process) opens every listener before any worker exists, so all
workers share the same sockets (a fork shares every descriptor). Sockets come back listening
with the configured backlog, non-blocking, and close-on-exec: programs the application
executes must not inherit corral's listening sockets (a master that re-executes itself marks
them inheritable just before its exec). When systemd passes sockets (socket activation),
those are served instead of binding any.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from corral.errors import ConfigError, CorralError, ExitCode
from corral.tls import tls_enabled

if TYPE_CHECKING:
    from corral.config import Config

logger = logging.getLogger("corral.error")

#: LISTEN_FDNAMES entries a re-executing master (corral.supervisor.pool) gives its sockets:
#: the ones it opened itself (their UNIX socket files still its own to remove at the final
#: stop) and the ones it was given (--fd, systemd), which stay their owner's.
REEXEC_OWNED = "corral-reexec"
REEXEC_GIVEN = "corral-reexec-given"

#: Permissions for a --uds socket file. uvicorn makes it 0o666 so a reverse proxy running as
#: another user can connect; corral keeps that (a drop-in must not break nginx setups), but
#: applies --umask when given, so `--umask 007` yields 0o660 for group-only access.
UDS_MODE = 0o666


class ListenError(CorralError):
    """A listener could not be opened (address in use, permission denied, ...)."""

    exit_code = ExitCode.ERROR


@dataclass
class Listener:
    """One listening socket and how to describe and clean it up."""

    sock: socket.socket
    kind: str  # "tcp" | "unix" | "fd" | "systemd"
    url: str  # "http://127.0.0.1:8000" or "unix:/path"
    unlink_path: str | None = None
    #: Only the process that created a UNIX socket file removes it, and only if it is still
    #: the same file (a forked worker, or a successor that replaced it, must not).
    owner_pid: int = field(default_factory=os.getpid)
    inode: tuple[int, int] | None = None


@dataclass(frozen=True)
class BindSpec:
    """A parsed address: ``kind`` "tcp" uses host/port, "unix" path, "fd" fd."""

    kind: Literal["tcp", "unix", "fd"]
    host: str = ""
    port: int = 0
    path: str = ""
    fd: int = -1


_BIND_FORMS = "expected HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N"


def parse_bind(spec: str) -> BindSpec:
    """Parse one gunicorn-style --bind value; raises ConfigError naming --bind."""
    text = spec.strip()
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ConfigError("--bind", f"{spec!r}: missing socket path after 'unix:'")
        return BindSpec("unix", path=path)
    if text.startswith("fd://"):
        raw = text[len("fd://") :]
        if not raw.isdigit():
            raise ConfigError("--bind", f"{spec!r}: fd:// needs a file descriptor number")
        return BindSpec("fd", fd=int(raw))
    if text.startswith("tcp://"):
        text = text[len("tcp://") :]
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ConfigError("--bind", f"{spec!r}: {_BIND_FORMS}")
        raw_port = rest[1:]
        if ":" not in host:
            raise ConfigError("--bind", f"{spec!r}: brackets are for IPv6 addresses")
    else:
        host, sep, raw_port = text.rpartition(":")
        if not sep:
            raise ConfigError("--bind", f"{spec!r}: missing port; {_BIND_FORMS}")
        if ":" in host:
            raise ConfigError(
                "--bind", f"{spec!r}: write IPv6 addresses in brackets, [{host}]:PORT"
            )
    if not host:
        raise ConfigError("--bind", f"{spec!r}: missing host (e.g. 0.0.0.0{text})")
    if not raw_port.isdigit() or not 0 <= int(raw_port) <= 65535:
        raise ConfigError("--bind", f"{spec!r}: port must be a number from 0 to 65535")
    return BindSpec("tcp", host=host, port=int(raw_port))


def _scheme(config: Config) -> str:
    return "https" if tls_enabled(config) else "http"


def _tcp_url(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _prepare(sock: socket.socket, backlog: int) -> None:
    sock.listen(backlog)
    sock.setblocking(False)
    sock.set_inheritable(False)


def open_tcp(host: str, port: int, config: Config) -> Listener:
    """Bind host:port (IPv6 when the host contains ':'); port 0 becomes the real port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        _prepare(sock, config.backlog)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)  # gaierror (unknown host) has its own text
        raise ListenError(
            f"error while attempting to bind on address ({host!r}, {port}): {reason.lower()}"
        ) from None
    real_port = sock.getsockname()[1]
    return Listener(sock, "tcp", _tcp_url(_scheme(config), host, real_port))


def _live_server_at(path: str) -> bool:
    """Whether something accepts connections on the UNIX socket at ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError:
        return False
    else:
        return True
    finally:
        probe.close()


def open_unix(path: str, config: Config, option: str = "--uds") -> Listener:
    """Bind a UNIX socket at ``path``, replacing a stale socket file but never a live one."""
    try:
        existing = os.lstat(path)
    except FileNotFoundError:
        existing = None
    if existing is not None:
        if not stat.S_ISSOCK(existing.st_mode):
            raise ConfigError(option, f"{path} exists and is not a socket; refusing to replace it")
        if _live_server_at(path):
            raise ListenError(f"another server is already listening on unix socket {path}")
        os.unlink(path)  # stale: left behind by a server that died
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        mode = UDS_MODE if config.umask is None else UDS_MODE & ~config.umask
        os.chmod(path, mode)
        _prepare(sock, config.backlog)
        info = os.stat(path)
    except OSError as exc:
        sock.close()
        raise ListenError(f"error while attempting to bind on unix socket {path}: {exc}") from None
    return Listener(
        sock, "unix", f"unix:{path}", unlink_path=path, inode=(info.st_dev, info.st_ino)
    )


def adopt_fd(fd: int, config: Config, option: str = "--fd", kind: str = "fd") -> Listener:
    """Serve an inherited listening socket; its family (TCP, IPv6, UNIX) is detected."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ConfigError(option, f"{fd} is not an open socket: {exc.strerror or exc}") from None
    if sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise ConfigError(option, f"{fd} is not a stream socket")
    try:
        _prepare(sock, config.backlog)
    except OSError as exc:
        sock.detach()
        raise ConfigError(option, f"cannot listen on fd {fd}: {exc.strerror or exc}") from None
    return Listener(sock, kind, socket_url(sock, _scheme(config)))


def socket_url(sock: socket.socket, scheme: str = "http") -> str:
    """Describe a bound socket for the log: ``unix:/path`` (``unix:@name`` for an abstract
    one) or ``SCHEME://host:port``, with ``scheme`` "https" when the listeners speak TLS."""
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        if isinstance(name, bytes):  # abstract: a NUL, then the name
            return "unix:@" + name[1:].decode(errors="replace")
        return f"unix:{name}"
    return _tcp_url(scheme, name[0], name[1])


def open_listeners(config: Config) -> list[Listener]:
    """Open every configured listener: each --bind, --uds, --fd, and --host/--port.

    --host/--port make a listener when either is given or when nothing else is configured.
    On failure, the listeners already opened are closed before the error propagates.
    Sockets passed by systemd (LISTEN_FDS for this pid) replace all of these.
    """
    specs = [parse_bind(spec) for spec in config.bind]
    from corral.activation import take_activated_sockets

    activated = take_activated_sockets()
    scheme = _scheme(config)
    passed = [(item.sock, item.name, socket_url(item.sock, scheme)) for item in activated]
    if activated and all(item.name in (REEXEC_OWNED, REEXEC_GIVEN) for item in activated):
        # Our own master re-executed in place and handed over every socket it served.
        logger.info("Kept %d listening socket(s) across the re-exec", len(activated))
        return [_kept_listener(sock, name, url) for sock, name, url in passed]
    if activated:
        names = ", ".join(f"{name} ({url})" for _, name, url in passed)
        logger.info("Using %d socket(s) passed by systemd: %s", len(activated), names)
        if config.bind or config.uds is not None or config.fd is not None:
            logger.info("--bind, --uds and --fd are ignored under socket activation")
        return [Listener(sock, "systemd", url) for sock, _, url in passed]
    listeners: list[Listener] = []
    try:
        for spec in specs:
            if spec.kind == "tcp":
                listeners.append(open_tcp(spec.host, spec.port, config))
            elif spec.kind == "unix":
                listeners.append(open_unix(spec.path, config, option="--bind"))
            else:
                listeners.append(adopt_fd(spec.fd, config, option="--bind"))
        if config.uds is not None:
            listeners.append(open_unix(config.uds, config))
        if config.fd is not None:
            listeners.append(adopt_fd(config.fd, config))
        if config.serves_host_port:
            listeners.append(open_tcp(config.bind_host, config.bind_port, config))
    except BaseException:
        close_listeners(listeners)
        raise
    return listeners


def reexec_name(listener: Listener) -> str:
    """The LISTEN_FDNAMES entry that tells the re-executed master who owns ``listener``."""
    return REEXEC_OWNED if listener.kind in ("tcp", "unix") else REEXEC_GIVEN


def _kept_listener(sock: socket.socket, name: str, url: str) -> Listener:
    if name == REEXEC_GIVEN:
        return Listener(sock, "fd", url)
    if not url.startswith("unix:"):
        return Listener(sock, "tcp", url)
    path = url[len("unix:") :]
    try:
        info = os.stat(path)
    except OSError:
        return Listener(sock, "unix", url)
    return Listener(sock, "unix", url, unlink_path=path, inode=(info.st_dev, info.st_ino))


def close_listeners(listeners: list[Listener]) -> None:
    """Close every socket; remove UNIX socket files this process created and still owns."""
    for listener in listeners:
        listener.sock.close()
        path = listener.unlink_path
        if path is None or listener.owner_pid != os.getpid():
            continue
        try:
            info = os.lstat(path)
            if listener.inode is None or (info.st_dev, info.st_ino) == listener.inode:
                os.unlink(path)
        except OSError:
            pass  # already gone, or not ours to remove: cleanup at exit is best effort
