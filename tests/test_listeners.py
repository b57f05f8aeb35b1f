"""Listeners: --bind parsing, TCP/IPv6 binds, UNIX socket lifecycle, adopted fds, banners."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from corral.config import Config
from corral.errors import ConfigError, ExitCode
from corral.listeners import (
    BindSpec,
    Listener,
    ListenError,
    close_listeners,
    open_listeners,
    parse_bind,
    reexec_name,
)
from corral.logging import banner_lines


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback here")


@pytest.fixture
def opened() -> Iterator[list[Listener]]:
    """Collects listeners opened by a test and closes them afterwards."""
    listeners: list[Listener] = []
    yield listeners
    close_listeners(listeners)


def open_with(opened: list[Listener], **settings: Any) -> list[Listener]:
    listeners = open_listeners(Config(app="x:y", **settings))
    opened.extend(listeners)
    return listeners


def connect(listener: Listener) -> socket.socket:
    """A blocking client connection to the listener's address."""
    family = listener.sock.family
    client = socket.socket(family, socket.SOCK_STREAM)
    client.settimeout(5)
    client.connect(listener.sock.getsockname())
    return client


@pytest.mark.smoke
@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("127.0.0.1:8000", BindSpec("tcp", host="127.0.0.1", port=8000)),
        ("localhost:0", BindSpec("tcp", host="localhost", port=0)),
        ("tcp://127.0.0.1:80", BindSpec("tcp", host="127.0.0.1", port=80)),
        ("[::1]:8443", BindSpec("tcp", host="::1", port=8443)),
        ("unix:/run/app.sock", BindSpec("unix", path="/run/app.sock")),
        ("unix:///run/app.sock", BindSpec("unix", path="/run/app.sock")),
        ("fd://3", BindSpec("fd", fd=3)),
    ],
)
def test_parse_bind_valid(spec: str, expected: BindSpec) -> None:
    """Every gunicorn-style address form parses to the right kind of listener."""
    assert parse_bind(spec) == expected


@pytest.mark.parametrize(
    "spec",
    [
        "127.0.0.1",
        ":8000",
        "::1:8000",
        "[::1]",
        "[127.0.0.1]:80",
        "host:http",
        "h:70000",
        "unix:",
        "fd://x",
        "fd://",
    ],
)
def test_parse_bind_invalid_names_option(spec: str) -> None:
    """A malformed --bind is a ConfigError naming --bind and quoting the value."""
    with pytest.raises(ConfigError) as info:
        parse_bind(spec)
    assert info.value.option == "--bind"
    assert repr(spec) in str(info.value)
    assert info.value.exit_code == ExitCode.USAGE


@pytest.mark.smoke
def test_tcp_port_zero_resolves_real_port(opened: list[Listener]) -> None:
    """Port 0 binds a free port, and the URL shows the real one; it accepts connections."""
    (listener,) = open_with(opened, port=0)
    port = listener.sock.getsockname()[1]
    assert port != 0
    assert listener.kind == "tcp"
    assert listener.url == f"http://127.0.0.1:{port}"
    assert listener.sock.getblocking() is False
    assert listener.sock.get_inheritable() is False
    with connect(listener):
        pass


def test_tcp_reuseaddr_and_backlog(opened: list[Listener]) -> None:
    """TCP listeners set SO_REUSEADDR and are listening."""
    (listener,) = open_with(opened, port=0, backlog=16)
    sock = listener.sock
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1


@needs_ipv6
def test_ipv6_host(opened: list[Listener]) -> None:
    """A host containing ':' binds IPv6, and the URL brackets it."""
    (listener,) = open_with(opened, host="::1", port=0)
    assert listener.sock.family == socket.AF_INET6
    port = listener.sock.getsockname()[1]
    assert listener.url == f"http://[::1]:{port}"
    with connect(listener):
        pass


def test_address_in_use_is_listen_error(opened: list[Listener]) -> None:
    """Binding a port another socket listens on fails with a short error (exit 1)."""
    (first,) = open_with(opened, port=0)
    port = first.sock.getsockname()[1]
    with pytest.raises(ListenError) as info:
        open_with(opened, port=port)
    assert "address already in use" in str(info.value)
    assert info.value.exit_code == ExitCode.ERROR


def test_foreign_address_is_listen_error(opened: list[Listener]) -> None:
    """An address this host doesn't have (TEST-NET-1) is a short bind error naming it."""
    with pytest.raises(ListenError, match=r"'192\.0\.2\.1', 0.*cannot assign requested address"):
        open_with(opened, host="192.0.2.1", port=0)


def test_failure_closes_earlier_listeners(opened: list[Listener], tmp_path: Path) -> None:
    """When a later listener fails, the ones already opened are closed (UNIX file removed)."""
    (busy,) = open_with(opened, port=0)
    port = busy.sock.getsockname()[1]
    path = tmp_path / "first.sock"
    with pytest.raises(ListenError):
        open_with(opened, bind=(f"unix:{path}", f"127.0.0.1:{port}"))
    assert not path.exists()


def test_several_binds_and_host_port_rule(opened: list[Listener], tmp_path: Path) -> None:
    """Every --bind is served; host/port is added only when given or when nothing else is."""
    path = tmp_path / "b.sock"
    listeners = open_with(opened, bind=("127.0.0.1:0", f"unix:{path}"))
    assert [item.kind for item in listeners] == ["tcp", "unix"]
    listeners = open_with(opened, bind=("127.0.0.1:0",), port=0)
    assert [item.kind for item in listeners] == ["tcp", "tcp"]
    for listener in listeners:
        with connect(listener):
            pass


@pytest.mark.smoke
def test_uds_lifecycle(tmp_path: Path) -> None:
    """--uds creates the socket file (0o666, like uvicorn), serves it, and removes it at close."""
    path = tmp_path / "app.sock"
    listeners = open_listeners(Config(app="x:y", uds=str(path)))
    (listener,) = listeners
    assert listener.kind == "unix" and listener.url == f"unix:{path}"
    assert stat.S_ISSOCK(path.stat().st_mode)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666
    with connect(listener):
        pass
    close_listeners(listeners)
    assert not path.exists()


def test_uds_mode_follows_umask(opened: list[Listener], tmp_path: Path) -> None:
    """With --umask, the socket file's mode is 0o666 minus the umask (007 -> 0o660)."""
    path = tmp_path / "app.sock"
    open_with(opened, uds=str(path), umask=0o007)
    assert stat.S_IMODE(path.stat().st_mode) == 0o660


def test_uds_replaces_stale_socket(opened: list[Listener], tmp_path: Path) -> None:
    """A socket file left by a dead server is replaced."""
    path = tmp_path / "stale.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens
    (listener,) = open_with(opened, uds=str(path))
    with connect(listener):
        pass


def test_uds_never_clobbers_live_server(opened: list[Listener], tmp_path: Path) -> None:
    """A socket file a live server listens on is left alone, with a clear error."""
    path = tmp_path / "live.sock"
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(str(path))
    live.listen(1)
    try:
        with pytest.raises(ListenError, match="already listening"):
            open_with(opened, uds=str(path))
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(path))  # still the original server's socket
        client.close()
    finally:
        live.close()


def test_uds_refuses_regular_file(opened: list[Listener], tmp_path: Path) -> None:
    """A path holding a regular file is never replaced by a socket."""
    path = tmp_path / "data.txt"
    path.write_text("precious")
    with pytest.raises(ConfigError, match="not a socket"):
        open_with(opened, uds=str(path))
    assert path.read_text() == "precious"


def test_uds_unlink_only_by_owner_and_same_file(tmp_path: Path) -> None:
    """Close removes the file only in the creating process and only if it is still ours."""
    path = tmp_path / "owned.sock"
    (listener,) = open_listeners(Config(app="x:y", uds=str(path)))
    listener.owner_pid = os.getpid() + 1  # as seen from a forked worker
    close_listeners([listener])
    assert path.exists()
    (listener,) = open_listeners(Config(app="x:y", uds=str(path)))
    os.unlink(path)
    replacement = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    replacement.bind(str(path))  # a successor's socket at the same path
    try:
        close_listeners([listener])
        assert path.exists()
    finally:
        replacement.close()


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_UNIX])
def test_fd_adopts_inherited_socket(
    family: socket.AddressFamily, tmp_path: Path, opened: list[Listener]
) -> None:
    """--fd serves an already-bound socket and detects its family from the descriptor."""
    original = socket.socket(family, socket.SOCK_STREAM)
    address: Any = ("127.0.0.1", 0) if family == socket.AF_INET else str(tmp_path / "fd.sock")
    original.bind(address)
    fd = os.dup(original.fileno())
    original.close()
    (listener,) = open_with(opened, fd=fd)
    assert listener.kind == "fd"
    assert listener.sock.family == family
    assert listener.unlink_path is None
    if family == socket.AF_UNIX:
        assert listener.url == f"unix:{address}"
    else:
        assert listener.url == f"http://127.0.0.1:{listener.sock.getsockname()[1]}"
    with connect(listener):
        pass


def test_fd_via_bind_spec(opened: list[Listener]) -> None:
    """--bind fd://N adopts the descriptor like --fd."""
    original = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    original.bind(("127.0.0.1", 0))
    fd = os.dup(original.fileno())
    original.close()
    (listener,) = open_with(opened, bind=(f"fd://{fd}",))
    assert listener.kind == "fd"


def test_fd_not_a_socket(tmp_path: Path) -> None:
    """--fd naming a file that isn't a socket is a ConfigError naming --fd."""
    path = tmp_path / "plain"
    path.write_text("x")
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(ConfigError) as info:
            open_listeners(Config(app="x:y", fd=fd))
        assert info.value.option == "--fd"
        os.fstat(fd)  # still open: a refused descriptor is not closed behind the user's back
    finally:
        os.close(fd)


def test_banner_lines() -> None:
    """The banner is uvicorn's line with corral's name, one per listener."""
    tcp = socket.socket()
    unix = socket.socket(socket.AF_UNIX)
    try:
        lines = banner_lines(
            [
                Listener(tcp, "tcp", "http://127.0.0.1:8000"),
                Listener(unix, "unix", "unix:/tmp/corral.sock"),
            ]
        )
    finally:
        tcp.close()
        unix.close()
    assert lines == [
        "corral running on http://127.0.0.1:8000 (Press CTRL+C to quit)",
        "corral running on unix socket /tmp/corral.sock (Press CTRL+C to quit)",
    ]


def test_reexec_sockets_are_kept_and_unix_files_still_owned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sockets handed over by our own re-exec are served as before, UNIX files still removed."""
    import corral.activation
    from corral.activation import ActivatedSocket

    path = tmp_path / "kept.sock"
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(path))
    unix.listen(1)
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(1)
    tcp_url = f"http://127.0.0.1:{tcp.getsockname()[1]}"
    handed = [
        ActivatedSocket(unix, "corral-reexec"),
        ActivatedSocket(tcp, "corral-reexec"),
    ]
    monkeypatch.setattr(corral.activation, "take_activated_sockets", lambda: handed)
    listeners = open_listeners(Config(app="x:y", port=0))
    assert [(item.kind, item.url) for item in listeners] == [
        ("unix", f"unix:{path}"),
        ("tcp", tcp_url),
    ]
    close_listeners(listeners)
    assert not path.exists()


def test_reexec_keeps_given_sockets_files_apart_from_owned_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a re-exec with --uds and --fd, only the --uds file is ours to remove."""
    import corral.activation
    from corral.activation import ActivatedSocket

    sockets = []
    for name in ("owned.sock", "given.sock"):
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        unix.bind(str(tmp_path / name))
        unix.listen(1)
        sockets.append(unix)
    handed = [
        ActivatedSocket(sockets[0], "corral-reexec"),
        ActivatedSocket(sockets[1], "corral-reexec-given"),
    ]
    monkeypatch.setattr(corral.activation, "take_activated_sockets", lambda: handed)
    listeners = open_listeners(Config(app="x:y", port=0))
    assert [item.kind for item in listeners] == ["unix", "fd"]
    assert [reexec_name(item) for item in listeners] == ["corral-reexec", "corral-reexec-given"]
    close_listeners(listeners)
    assert not (tmp_path / "owned.sock").exists()
    assert (tmp_path / "given.sock").exists()


def test_systemd_sockets_replace_configured_listeners(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sockets passed by systemd are served instead of binding --host/--port."""
    import corral.activation
    from corral.activation import ActivatedSocket

    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(1)
    url = f"http://127.0.0.1:{tcp.getsockname()[1]}"
    monkeypatch.setattr(
        corral.activation, "take_activated_sockets", lambda: [ActivatedSocket(tcp, "web")]
    )
    listeners = open_listeners(Config(app="x:y", port=0))
    assert [(item.kind, item.url, item.sock) for item in listeners] == [("systemd", url, tcp)]
    close_listeners(listeners)


def test_systemd_sockets_are_announced_https_under_tls(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A socket systemd passes speaks TLS when corral is given a certificate: its URL in the
    log and the banner says https (the activation layer alone can't know it)."""
    import corral.activation
    from corral.activation import ActivatedSocket

    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(1)
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract.bind(f"\0corral-test-{os.getpid()}")
    abstract.listen(1)
    handed = [ActivatedSocket(tcp, "web"), ActivatedSocket(abstract, "local")]
    monkeypatch.setattr(corral.activation, "take_activated_sockets", lambda: handed)
    caplog.set_level("INFO", logger="corral.error")
    config = Config(app="x:y", port=0, ssl_certfile="/not/read/here.pem")
    listeners = open_listeners(config)
    https = f"https://127.0.0.1:{tcp.getsockname()[1]}"
    local = f"unix:@corral-test-{os.getpid()}"
    assert [item.url for item in listeners] == [https, local]
    assert f"web ({https}), local ({local})" in caplog.text
    assert banner_lines(listeners)[0] == f"corral running on {https} (Press CTRL+C to quit)"
    close_listeners(listeners)
