"""Socket activation: parsing LISTEN_*, adopting passed sockets, and not leaking them onward.

Two launchers pass the sockets: a harness in this file that sets LISTEN_PID/LISTEN_FDS itself
(it never skips), and Debian's systemd-socket-activate (skipped only when it is absent).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from corral.activation import (
    PassedFd,
    parse_environ,
    seal_inherited_fds,
    take_activated_sockets,
)
from corral.errors import ConfigError

from tests import conftest

DEADLINE = 20.0

# Places the given descriptors at 3, 4, ... and sets LISTEN_PID to its own pid, which exec
# keeps, then runs the command: what systemd does between fork and exec.
SHIM = r"""
import fcntl, os, sys
count = int(sys.argv[1])
names = sys.argv[2]
fds = [int(x) for x in sys.argv[3:3 + count]]
argv = sys.argv[3 + count:]
moved = [fcntl.fcntl(fd, fcntl.F_DUPFD, 200) for fd in fds]
for fd in fds:
    os.close(fd)
for index, fd in enumerate(moved):
    os.dup2(fd, 3 + index)
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = str(count)
if names:
    os.environ["LISTEN_FDNAMES"] = names
os.execv(argv[0], argv)
"""

# Adopts the sockets, reports what it found as one JSON line, then answers one connection
# per socket (in order) with the socket's name.
PROBE = r"""
import json, os, subprocess, sys
from corral.activation import take_activated_sockets
from corral.listeners import socket_url
names = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
before = {name: os.environ.get(name) for name in names}
leak = int(os.environ.get("PROBE_LEAK_FD", "-1"))
leak_open_before = leak >= 0 and os.get_inheritable(leak)
adopted = take_activated_sockets()
after = {name: os.environ.get(name) for name in names}
grandchild = subprocess.run(
    [sys.executable, "-c",
     "import os\n"
     "fds = []\n"
     "for fd in range(3, 256):\n"
     "    try:\n"
     "        os.fstat(fd)\n"
     "    except OSError:\n"
     "        continue\n"
     "    fds.append(fd)\n"
     "print(fds, end='')\n"
     "print(' ' + repr({k: v for k, v in os.environ.items() if k.startswith('LISTEN_')}))"],
    close_fds=False, capture_output=True, text=True, check=True,
)
report = {
    "pid": os.getpid(),
    "before": before,
    "after": after,
    "leak_open_before": leak_open_before,
    "grandchild": grandchild.stdout.strip(),
    "sockets": [
        {"fd": a.sock.fileno(), "name": a.name, "url": socket_url(a.sock),
         "family": a.sock.family.name, "inheritable": a.sock.get_inheritable(),
         "blocking": a.sock.getblocking()}
        for a in adopted
    ],
}
print(json.dumps(report), flush=True)
for a in adopted:
    a.sock.settimeout(30)
    conn, _ = a.sock.accept()
    conn.sendall(a.name.encode())
    conn.close()
"""


def launch_activated(
    command: Sequence[str],
    sockets: Sequence[socket.socket],
    names: Sequence[str] = (),
    extra_fds: Sequence[int] = (),
    env: dict[str, str] | None = None,
    **popen: object,
) -> subprocess.Popen[str]:
    """Start ``command`` socket-activated with ``sockets`` at fd 3.. (the harness launcher)."""
    fds = [s.fileno() for s in sockets]
    argv = [sys.executable, "-c", SHIM, str(len(fds)), ":".join(names), *map(str, fds)]
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [*argv, *command],
        pass_fds=(*fds, *extra_fds),
        env=env if env is not None else dict(os.environ),
        text=True,
        **popen,
    )


def tcp_listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


def unix_listener(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(16)
    return sock


def ask(address: object, family: socket.AddressFamily) -> bytes:
    """Connect, read until EOF: the probe answers with the socket's name."""
    with socket.socket(family, socket.SOCK_STREAM) as client:
        client.settimeout(DEADLINE)
        client.connect(address)
        data = b""
        while chunk := client.recv(100):
            data += chunk
        return data


@pytest.fixture
def closing() -> Iterator[list[socket.socket]]:
    owned: list[socket.socket] = []
    yield owned
    for sock in owned:
        sock.close()


# --- parsing (pure) --------------------------------------------------------------------------
def test_parse_names_descriptors_from_three() -> None:
    """LISTEN_FDS counts descriptors from 3, LISTEN_FDNAMES names them in order."""
    env = {"LISTEN_PID": "42", "LISTEN_FDS": "3", "LISTEN_FDNAMES": "web:admin:local"}
    assert parse_environ(env, 42) == [
        PassedFd(3, "web"),
        PassedFd(4, "admin"),
        PassedFd(5, "local"),
    ]


def test_parse_without_names_says_unknown() -> None:
    """Without LISTEN_FDNAMES each descriptor is named "unknown", as sd_listen_fds_with_names."""
    assert parse_environ({"LISTEN_PID": "7", "LISTEN_FDS": "2"}, 7) == [
        PassedFd(3, "unknown"),
        PassedFd(4, "unknown"),
    ]


def test_parse_ignores_sockets_meant_for_another_process() -> None:
    """A LISTEN_PID naming another process (inherited variables) means no activation."""
    assert parse_environ({"LISTEN_PID": "41", "LISTEN_FDS": "2"}, 42) == []
    assert parse_environ({"LISTEN_FDS": "2"}, 42) == []
    assert parse_environ({}, 42) == []


@pytest.mark.parametrize(
    ("env", "option"),
    [
        ({"LISTEN_PID": "x", "LISTEN_FDS": "1"}, "LISTEN_PID"),
        ({"LISTEN_PID": "9", "LISTEN_FDS": "one"}, "LISTEN_FDS"),
        ({"LISTEN_PID": "9", "LISTEN_FDS": "-1"}, "LISTEN_FDS"),
        ({"LISTEN_PID": "9", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a"}, "LISTEN_FDNAMES"),
    ],
)
def test_parse_rejects_malformed_variables(env: dict[str, str], option: str) -> None:
    """Malformed activation variables are a configuration error naming the variable."""
    with pytest.raises(ConfigError) as info:
        parse_environ(env, 9)
    assert info.value.option == option


def test_foreign_variables_are_cleared_but_not_adopted() -> None:
    """Variables meant for another pid are removed so our own children don't adopt either."""
    env = {"LISTEN_PID": "1", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "x", "OTHER": "y"}
    assert take_activated_sockets(env, pid=os.getpid() + 1) == []
    assert env == {"OTHER": "y"}


def test_seal_marks_inherited_descriptors_close_on_exec() -> None:
    """Every inheritable fd from 3 up becomes close-on-exec, except the ones kept."""
    read_end, write_end = os.pipe()
    try:
        os.set_inheritable(read_end, True)
        os.set_inheritable(write_end, True)
        changed = seal_inherited_fds(keep=[write_end])
        assert read_end in changed
        assert not os.get_inheritable(read_end)
        assert os.get_inheritable(write_end)
    finally:
        os.close(read_end)
        os.close(write_end)


# --- adoption in a real launched process --------------------------------------------------
def read_report(proc: subprocess.Popen[str]) -> dict[str, object]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, f"probe exited with {proc.wait(DEADLINE)} before reporting"
    report: dict[str, object] = json.loads(line)
    return report


def test_harness_activation_adopts_named_tcp_and_unix_sockets(
    tmp_path: Path, closing: list[socket.socket]
) -> None:
    """Three named sockets (two TCP, one UNIX) arrive at fd 3-5 and each serves clients."""
    first, second = tcp_listener(), tcp_listener()
    local = unix_listener(tmp_path / "local.sock")
    closing += [first, second, local]
    leak_read, leak_write = os.pipe()
    os.set_inheritable(leak_read, True)
    env = dict(os.environ, PROBE_LEAK_FD=str(leak_read))
    proc = launch_activated(
        [sys.executable, "-c", PROBE],
        [first, second, local],
        names=["web", "admin", "local"],
        extra_fds=[leak_read],
        env=env,
        stdout=subprocess.PIPE,
    )
    os.close(leak_read)
    os.close(leak_write)
    try:
        report = read_report(proc)
        sockets = report["sockets"]
        assert isinstance(sockets, list)
        assert [(s["fd"], s["name"], s["family"]) for s in sockets] == [
            (3, "web", "AF_INET"),
            (4, "admin", "AF_INET"),
            (5, "local", "AF_UNIX"),
        ]
        assert sockets[0]["url"] == f"http://127.0.0.1:{first.getsockname()[1]}"
        assert sockets[2]["url"] == f"unix:{tmp_path / 'local.sock'}"
        assert all(not s["inheritable"] and not s["blocking"] for s in sockets)
        assert report["before"] == {
            "LISTEN_PID": str(report["pid"]),
            "LISTEN_FDS": "3",
            "LISTEN_FDNAMES": "web:admin:local",
        }
        assert report["after"] == dict.fromkeys(("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"))
        # The extra descriptor was really inherited, yet neither it nor the sockets nor the
        # variables reach a program the app runs, even with close_fds=False.
        assert report["leak_open_before"] is True
        assert report["grandchild"] == "[] {}"
        assert ask(first.getsockname(), socket.AF_INET) == b"web"
        assert ask(second.getsockname(), socket.AF_INET) == b"admin"
        assert ask(str(tmp_path / "local.sock"), socket.AF_UNIX) == b"local"
        assert proc.wait(DEADLINE) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_harness_refuses_a_datagram_socket(closing: list[socket.socket]) -> None:
    """A passed datagram socket is a short configuration error naming fd and LISTEN_FDS."""
    dgram = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dgram.bind(("127.0.0.1", 0))
    closing.append(dgram)
    code = (
        "from corral.activation import take_activated_sockets\n"
        "from corral.errors import ConfigError\n"
        "try:\n    take_activated_sockets()\n"
        "except ConfigError as exc:\n    print(exc)\n"
    )
    proc = launch_activated(
        [sys.executable, "-c", code], [dgram], names=["dg"], stdout=subprocess.PIPE
    )
    out, _ = proc.communicate(timeout=DEADLINE)
    assert "'LISTEN_FDS'" in out and "fd 3 (dg) is not a stream socket" in out


def wait_for(predicate: Callable[[], object], what: str, timeout: float = DEADLINE) -> object:
    """:func:`tests.conftest.wait_for`, in the argument order these tests use."""
    return conftest.wait_for(predicate, timeout, what)


@pytest.mark.skipif(
    shutil.which("systemd-socket-activate") is None, reason="systemd-socket-activate is absent"
)
def test_systemd_socket_activate_passes_named_sockets(
    tmp_path: Path, closing: list[socket.socket]
) -> None:
    """Through systemd-socket-activate: TCP and two UNIX sockets, names from --fdname."""
    # systemd-socket-activate cannot bind port 0, but passes on sockets it was itself given
    # (the harness hands it a TCP socket on a free port) and adds the ones it opens.
    web = tcp_listener()
    closing.append(web)
    first, second = tmp_path / "first.sock", tmp_path / "second.sock"
    command = [
        shutil.which("systemd-socket-activate") or "",
        f"--listen={first}",
        f"--listen={second}",
        "--fdname=web:local:admin",
        sys.executable,
        "-c",
        PROBE,
    ]
    proc = launch_activated(command, [web], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(second.exists, "the launcher to listen")
        # The launcher starts the program on the first connection; it is answered once the
        # program has adopted the sockets.
        assert ask(web.getsockname(), socket.AF_INET) == b"web"
        report = read_report(proc)
        sockets = report["sockets"]
        assert isinstance(sockets, list)
        assert [(s["fd"], s["name"], s["family"]) for s in sockets] == [
            (3, "web", "AF_INET"),
            (4, "local", "AF_UNIX"),
            (5, "admin", "AF_UNIX"),
        ]
        assert report["before"]["LISTEN_PID"] == str(report["pid"])  # type: ignore[index]
        assert report["after"] == dict.fromkeys(("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"))
        assert report["grandchild"] == "[] {}"
        assert ask(str(first), socket.AF_UNIX) == b"local"
        assert ask(str(second), socket.AF_UNIX) == b"admin"
        assert proc.wait(DEADLINE) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- corral itself, socket-activated -------------------------------------------------------
# The app the end-to-end tests serve: "/" names the serving pid, "/env" shows what the app
# sees of the activation and notify variables, "/spawn" lists the descriptors a program it
# runs would inherit (close_fds=False, as os.system would), "/slow?S" answers after S seconds.
APP = r"""
import asyncio, json, os, subprocess, sys

LISTER = (
    "import os\n"
    "fds = []\n"
    "for fd in range(3, 1024):\n"
    "    try:\n"
    "        os.fstat(fd)\n"
    "    except OSError:\n"
    "        continue\n"
    "    fds.append(fd)\n"
    "print(fds, end='')\n"
)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    path = scope["path"]
    if path == "/env":
        names = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_USEC")
        body = json.dumps({name: os.environ.get(name) for name in names})
    elif path == "/spawn":
        body = subprocess.run(
            [sys.executable, "-c", LISTER], close_fds=False, capture_output=True, text=True
        ).stdout
    elif path == "/orphan":
        # The shell exits at once; its background child is re-parented to PID 1.
        os.system("sleep 0.3 &")
        body = "spawned"
    else:
        if path == "/slow":
            print("slow request started", file=sys.stderr, flush=True)
            await asyncio.sleep(float(scope["query_string"] or b"1"))
        body = f"pid={os.getpid()}"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body.encode()})
"""


def write_app(directory: Path) -> list[str]:
    """Write the test app into ``directory``; returns the corral arguments to serve it."""
    (directory / "sysapp.py").write_text(APP)
    return ["sysapp:app", "--app-dir", str(directory)]


def corral_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "corral", *args]


class LogFile:
    """A process's stderr in a file the test polls (no pipes to fill up)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle = open(path, "wb")  # noqa: SIM115 (closed by close())

    def text(self) -> str:
        return self.path.read_text(errors="replace")

    def wait(self, needle: str, count: int = 1, timeout: float = DEADLINE) -> str:
        wait_for(lambda: self.text().count(needle) >= count, f"{needle!r} in the log", timeout)
        return self.text()

    def close(self) -> None:
        self.handle.close()


def http_get(
    address: object, family: socket.AddressFamily = socket.AF_INET, path: str = "/"
) -> tuple[int, dict[str, str], str]:
    """One request on a fresh connection: (status, lower-cased headers, body)."""
    with socket.socket(family, socket.SOCK_STREAM) as client:
        client.settimeout(DEADLINE)
        client.connect(address)
        client.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := client.recv(65536):
            data += chunk
    if not data:
        raise ConnectionError(f"GET {path}: connection closed without a response")
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        decoded, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            decoded, rest = decoded + rest[:size], rest[size + 2 :]
        body = decoded
    return status, headers, body.decode()


def stop(proc: subprocess.Popen[str], log: LogFile | None = None) -> None:
    """Make sure the process and anything it started are gone."""
    import psutil

    try:
        kids = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        kids = []
    if proc.poll() is None:
        proc.kill()
        proc.wait(DEADLINE)
    for kid in kids:
        try:
            kid.kill()
        except psutil.NoSuchProcess:
            pass
    if log is not None:
        log.close()
        print(log.text()[-6000:])  # shown by pytest only when the test failed


@pytest.mark.parametrize("workers", [None, 2], ids=["single", "master"])
def test_corral_serves_every_passed_socket(
    tmp_path: Path, closing: list[socket.socket], workers: int | None
) -> None:
    """corral serves every passed socket, logs it, and leaks no variable or fd to the app."""
    web = tcp_listener()
    local = unix_listener(tmp_path / "local.sock")
    closing += [web, local]
    args = write_app(tmp_path)
    if workers:
        args += ["--workers", str(workers)]
    log = LogFile(tmp_path / "corral.log")
    proc = launch_activated(
        corral_argv(*args), [web, local], names=["web", "local"], stderr=log.handle
    )
    try:
        text = log.wait("Application startup complete.", count=workers or 1)
        assert "Using 2 socket(s) passed by systemd" in text
        assert "web (http://127.0.0.1:" in text and f"local (unix:{tmp_path}/local.sock)" in text
        assert ":8000" not in text  # nothing of its own was bound
        assert http_get(web.getsockname())[0] == 200
        assert http_get(str(tmp_path / "local.sock"), socket.AF_UNIX)[0] == 200
        _, _, env = http_get(web.getsockname(), path="/env")
        assert json.loads(env) == dict.fromkeys(
            ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_USEC")
        )
        assert http_get(web.getsockname(), path="/spawn")[2] == "[]"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(DEADLINE) == 0
    finally:
        stop(proc, log)


def test_zero_failed_requests_during_sighup_while_activated(
    tmp_path: Path, closing: list[socket.socket]
) -> None:
    """Fresh-connection clients on both passed sockets see zero failures across SIGHUP."""
    web = tcp_listener()
    local = unix_listener(tmp_path / "local.sock")
    closing += [web, local]
    log = LogFile(tmp_path / "corral.log")
    args = [*write_app(tmp_path), "--workers", "2"]
    proc = launch_activated(
        corral_argv(*args), [web, local], names=["web", "local"], stderr=log.handle
    )
    targets: list[tuple[object, socket.AddressFamily]] = [
        (web.getsockname(), socket.AF_INET),
        (str(tmp_path / "local.sock"), socket.AF_UNIX),
    ]
    results: list[tuple[str, str]] = []  # (outcome, body)
    done = threading.Event()

    def client(index: int) -> None:
        address, family = targets[index % 2]
        deadline = time.monotonic() + 30
        while not done.is_set() and time.monotonic() < deadline:
            try:
                status, _, body = http_get(address, family)
                results.append(("ok" if status == 200 else f"status {status}", body))
            except OSError as exc:
                results.append((f"error {exc!r}", ""))

    try:
        log.wait("ready", count=2)
        before = {http_get(web.getsockname())[2] for _ in range(4)}
        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        wait_for(lambda: len(results) >= 40, "requests before the reload")
        proc.send_signal(signal.SIGHUP)
        log.wait("Reload complete")
        count = len(results)
        wait_for(lambda: len(results) >= count + 40, "requests after the reload")
        done.set()
        for thread in threads:
            thread.join(DEADLINE)
        failures = [outcome for outcome, _ in results if outcome != "ok"]
        assert failures == [], f"{len(failures)} of {len(results)} failed: {failures[:5]}"
        after = {body for _, body in results[-8:]}
        assert before.isdisjoint(after), "the old workers still answer after the reload"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(DEADLINE) == 0
    finally:
        done.set()
        stop(proc, log)


@pytest.mark.skipif(
    shutil.which("systemd-socket-activate") is None, reason="systemd-socket-activate is absent"
)
def test_corral_under_systemd_socket_activate(tmp_path: Path, closing: list[socket.socket]) -> None:
    """corral --workers 2 launched by systemd-socket-activate serves its TCP and UNIX sockets."""
    web = tcp_listener()
    closing.append(web)
    path = tmp_path / "activated.sock"
    log = LogFile(tmp_path / "corral.log")
    command = [
        shutil.which("systemd-socket-activate") or "",
        f"--listen={path}",
        "--fdname=web:local",
        *corral_argv(*write_app(tmp_path), "--workers", "2"),
    ]
    proc = launch_activated(command, [web], stderr=log.handle)
    try:
        wait_for(path.exists, "the launcher to listen")
        # The first connection makes the launcher start corral; it waits in the backlog.
        assert http_get(web.getsockname())[0] == 200
        text = log.wait("Using 2 socket(s) passed by systemd")
        assert "web (http://127.0.0.1:" in text and f"local (unix:{path})" in text
        assert http_get(str(path), socket.AF_UNIX)[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(DEADLINE) == 0
    finally:
        stop(proc, log)


def test_preload_reexec_leaves_systemds_socket_files_alone(
    tmp_path: Path, closing: list[socket.socket]
) -> None:
    """After a --preload reload (master re-exec) a stop leaves systemd's socket file in place."""
    path = tmp_path / "local.sock"
    local = unix_listener(path)
    closing.append(local)
    log = LogFile(tmp_path / "corral.log")
    args = [*write_app(tmp_path), "--workers", "1", "--preload"]
    proc = launch_activated(corral_argv(*args), [local], names=["local"], stderr=log.handle)
    try:
        log.wait("ready")
        proc.send_signal(signal.SIGHUP)
        log.wait("Reload complete")
        assert http_get(str(path), socket.AF_UNIX)[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(DEADLINE) == 0
        assert path.exists(), "corral removed a socket file that belongs to systemd"
    finally:
        stop(proc, log)
