"""sd_notify: the Notifier's decisions (fake clock) and real datagrams to a fake notify socket.

The fake notify socket is a datagram socket in tmp_path, like the one systemd listens on: it
records every message and closes any descriptor passed along with one. Nothing here needs a
running systemd, and nothing skips.
"""

from __future__ import annotations

import array
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from corral.supervisor.master import MasterState
from corral.supervisor.policy import Target, WorkerState
from corral.supervisor.systemd import (
    EXTEND_MARGIN,
    EXTEND_RESEND,
    DatagramTransport,
    MasterNotifier,
    Notifier,
    NotifyState,
    NotifyTransitionError,
    monotonic_usec,
    socket_address,
    status_text,
    watchdog_interval,
)

from tests.test_activation import (
    LogFile,
    corral_argv,
    http_get,
    launch_activated,
    stop,
    tcp_listener,
    write_app,
)

DEADLINE = 20.0
ROOT = Path(__file__).resolve().parent.parent


class FakeNotifySocket:
    """A stand-in for systemd's notify socket: records datagrams, closes passed fds."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)
        self.messages: list[dict[str, str]] = []
        self.raw: list[bytes] = []
        self.fds_closed = 0

    def drain(self) -> None:
        """Read every queued datagram."""
        space = socket.CMSG_SPACE(16 * array.array("i").itemsize)
        while True:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, space)
            except BlockingIOError:
                return
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                    for fd in fds:
                        os.close(fd)
                        self.fds_closed += 1
            self.raw.append(data)
            self.messages.append(dict(line.split("=", 1) for line in data.decode().split("\n")))

    def wait_for(
        self,
        predicate: Callable[[list[dict[str, str]]], bool],
        what: str,
        timeout: float = DEADLINE,
    ) -> list[dict[str, str]]:
        """Poll until ``predicate(messages)`` holds; the messages so far on success."""
        deadline = time.monotonic() + timeout
        while True:
            self.drain()
            if predicate(self.messages):
                return self.messages
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; got {self.messages}")
            time.sleep(0.02)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[FakeNotifySocket]:
    fake = FakeNotifySocket(str(tmp_path / "notify.sock"))
    yield fake
    fake.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def recording(clock: FakeClock | None = None, watchdog: float | None = None) -> Notifier:
    sent: list[bytes] = []
    notifier = Notifier(
        sent.append, watchdog=watchdog, clock=clock or FakeClock(), monotonic_usec=lambda: 4242
    )
    notifier.sent = sent  # type: ignore[attr-defined]
    return notifier


def sent(notifier: Notifier) -> list[str]:
    return [m.decode() for m in notifier.sent]  # type: ignore[attr-defined]


# --- decisions (pure) ------------------------------------------------------------------------
def test_addresses_and_watchdog_interval() -> None:
    """@name is an abstract address; WATCHDOG_USEC/2 is the ping interval, for our pid only."""
    assert socket_address("@corral/notify") == b"\0corral/notify"
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    with pytest.raises(ValueError, match="unsupported"):
        socket_address("vsock:2:1234")
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, 7) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, 7) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"}, 7) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, 7) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, 7) is None
    assert watchdog_interval({}, 7) is None


def test_lifecycle_messages_and_idempotence() -> None:
    """READY, RELOADING+MONOTONIC_USEC, READY, STOPPING; repeats of a state send nothing."""
    notifier = recording()
    assert notifier.ready("1/1 ready") is True
    assert notifier.ready("1/1 ready") is False
    assert notifier.reloading() is True
    assert notifier.reloading() is False
    assert notifier.ready() is True
    assert notifier.stopping() is True
    assert notifier.stopping() is False
    assert sent(notifier) == [
        "READY=1\nSTATUS=1/1 ready",
        "RELOADING=1\nMONOTONIC_USEC=4242",
        "READY=1",
        "STOPPING=1",
    ]
    assert notifier.state is NotifyState.STOPPING


def test_invalid_transitions_raise_a_named_error() -> None:
    """RELOADING before the first READY or after STOPPING, and READY after STOPPING, raise."""
    notifier = recording()
    with pytest.raises(NotifyTransitionError):
        notifier.reloading()
    notifier.stopping()
    with pytest.raises(NotifyTransitionError):
        notifier.ready()
    with pytest.raises(NotifyTransitionError):
        notifier.reloading()


def test_status_is_sent_only_when_it_changes() -> None:
    """STATUS= goes out when the text differs from the last one sent."""
    notifier = recording()
    assert notifier.status(status_text(1, 2, 1, 0)) is True
    assert notifier.status(status_text(1, 2, 1, 0)) is False
    assert notifier.status(status_text(2, 2, 1, 1)) is True
    assert sent(notifier) == [
        "STATUS=1/2 workers ready, generation 1, 0 recent restarts",
        "STATUS=2/2 workers ready, generation 1, 1 recent restart",
    ]


def test_watchdog_pings_every_interval() -> None:
    """WATCHDOG=1 at once, then each time the interval has passed, never early."""
    clock = FakeClock()
    notifier = recording(clock, watchdog=5.0)
    assert notifier.next_deadline() == 100.0
    assert notifier.tick() is True
    assert notifier.tick() is False
    clock.now = 104.9
    assert notifier.tick() is False
    assert notifier.next_deadline() == 105.0
    clock.now = 105.0
    assert notifier.tick() is True
    assert sent(notifier) == ["WATCHDOG=1", "WATCHDOG=1"]


def test_extension_follows_progress_and_stops_at_the_deadline() -> None:
    """EXTEND_TIMEOUT_USEC covers what is left plus a margin, is re-sent, and ends in time."""
    clock = FakeClock()
    notifier = recording(clock)
    assert notifier.extend_until(160.0) is True  # a worker booting until 160
    assert notifier.extend_until(160.0) is False  # nothing new yet
    assert notifier.next_deadline() == 100.0 + EXTEND_RESEND
    clock.now = 100.0 + EXTEND_RESEND
    assert notifier.extend_until(160.0) is True  # still in progress: re-sent
    assert notifier.extend_until(170.0) is True  # a later deadline: at once
    clock.now = 171.0
    assert notifier.extend_until(170.0) is False  # past our own bound: no more time
    assert notifier.extend_until(None) is False
    values = [int(m.split("=")[1]) for m in sent(notifier)]
    assert values == [
        int((60.0 + EXTEND_MARGIN) * 1e6),
        int((60.0 - EXTEND_RESEND + EXTEND_MARGIN) * 1e6),
        int((70.0 - EXTEND_RESEND + EXTEND_MARGIN) * 1e6),
    ]
    notifier.ready()
    assert notifier.extend_until(300.0) is False  # READY: it would extend RuntimeMaxSec


class FakeMaster:
    """What MasterNotifier reads of a master: state, workers, target and clock."""

    def __init__(self, clock: FakeClock, workers: int = 2) -> None:
        self.state = MasterState.STARTING
        self.workers: dict[int, SimpleNamespace] = {}
        self.target = Target(workers=workers, generation=1)
        self.clock = clock

    def add(
        self, pid: int, slot: int, generation: int, state: WorkerState, deadline: float
    ) -> None:
        self.workers[pid] = SimpleNamespace(
            pid=pid, slot=slot, generation=generation, state=state, deadline=deadline
        )
        self.workers[pid].retire_reason = None


def test_master_notifier_waits_for_the_whole_first_generation() -> None:
    """No READY=1 while one of two workers boots (extensions instead); READY=1 with both."""
    clock = FakeClock()
    master = FakeMaster(clock)
    hook = MasterNotifier(recording(clock))
    master.add(11, 1, 1, WorkerState.READY, 0.0)
    master.add(12, 2, 1, WorkerState.BOOTING, 160.0)
    hook.update(master)  # type: ignore[arg-type]
    master.state = MasterState.RUNNING  # a master bug or a race must not make READY early
    hook.update(master)  # type: ignore[arg-type]
    assert sent(hook.notifier) == [
        "STATUS=1/2 workers ready, generation 1, 0 recent restarts",
        f"EXTEND_TIMEOUT_USEC={int((60.0 + EXTEND_MARGIN) * 1e6)}",
    ]
    master.workers[12].state = WorkerState.READY
    hook.update(master)  # type: ignore[arg-type]
    assert sent(hook.notifier)[-1] == (
        "READY=1\nSTATUS=2/2 workers ready, generation 1, 0 recent restarts"
    )


def test_master_notifier_reload_stop_and_restarts() -> None:
    """RELOADING then READY on a reload, restarts age out, STOPPING extends to the drain."""
    clock = FakeClock()
    master = FakeMaster(clock, workers=1)
    hook = MasterNotifier(recording(clock))
    master.add(11, 1, 1, WorkerState.READY, 0.0)
    master.state = MasterState.RUNNING
    hook.update(master)  # type: ignore[arg-type]
    master.state = MasterState.RELOADING
    master.target = Target(workers=1, generation=2, reload_from=1)
    hook.on_event("reloading", master)  # type: ignore[arg-type]
    hook.on_event("worker-failed", master)  # type: ignore[arg-type]
    master.add(21, 1, 2, WorkerState.READY, 0.0)
    del master.workers[11]  # drained and reaped
    master.state = MasterState.RUNNING
    master.target = Target(workers=1, generation=2)
    hook.update(master)  # type: ignore[arg-type]
    clock.now += MasterNotifier.RESTART_WINDOW + 1
    hook.update(master)  # type: ignore[arg-type]
    master.state = MasterState.STOPPING
    master.workers[21].state = WorkerState.DRAINING
    master.workers[21].deadline = clock.now + 45.0
    hook.on_event("stopping", master)  # type: ignore[arg-type]
    assert sent(hook.notifier) == [
        "READY=1\nSTATUS=1/1 workers ready, generation 1, 0 recent restarts",
        "RELOADING=1\nMONOTONIC_USEC=4242\nSTATUS=Reloading: 0/1 workers ready,"
        " generation 2, 0 recent restarts",
        "STATUS=Reloading: 0/1 workers ready, generation 2, 1 recent restart",
        "READY=1\nSTATUS=1/1 workers ready, generation 2, 1 recent restart",
        "STATUS=1/1 workers ready, generation 2, 0 recent restarts",
        "STOPPING=1\nSTATUS=Stopping: 1 worker still running",
        f"EXTEND_TIMEOUT_USEC={int((45.0 + EXTEND_MARGIN) * 1e6)}",
    ]


def test_without_notify_socket_nothing_is_sent_but_state_moves() -> None:
    """No NOTIFY_SOCKET: every call is a no-op for systemd, the state machine still runs."""
    env = {"WATCHDOG_USEC": "1000000"}
    notifier = Notifier.from_environ(env, pid=1)
    assert not notifier.enabled
    assert notifier.ready() is True
    assert notifier.tick() is False
    assert notifier.next_deadline() is None
    assert notifier.state is NotifyState.READY


def test_from_environ_removes_the_variables(notify_socket: FakeNotifySocket) -> None:
    """NOTIFY_SOCKET and WATCHDOG_* are taken out of the environment (kept for a re-exec)."""
    address = notify_socket.sock.getsockname()
    env = {
        "NOTIFY_SOCKET": address,
        "WATCHDOG_USEC": "2000000",
        "WATCHDOG_PID": "33",
        "PATH": "/bin",
    }
    notifier = Notifier.from_environ(env, pid=33)
    assert env == {"PATH": "/bin"}
    assert notifier.watchdog == 1.0
    assert notifier.saved_environ["NOTIFY_SOCKET"] == address
    notifier.ready()
    notify_socket.wait_for(lambda m: m == [{"READY": "1"}], "READY=1")
    notifier.close()


def test_module_helpers_share_the_process_notifier(notify_socket: FakeNotifySocket) -> None:
    """notify_ready() and friends speak through the one notifier made from os.environ."""
    code = (
        "import os\n"
        "from corral.supervisor import systemd as sd\n"
        "made = sd.Notifier.from_environ()\n"
        "assert sd.notifier() is made and 'NOTIFY_SOCKET' not in os.environ\n"
        "sd.notify_ready('up')\n"
        "sd.status('still up')\n"
        "sd.extend_timeout(1000)\n"
        "sd.notify_reloading()\n"
        "sd.notify_stopping()\n"
    )
    env = dict(os.environ, NOTIFY_SOCKET=notify_socket.sock.getsockname())
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=DEADLINE)
    messages = notify_socket.wait_for(lambda m: len(m) == 5, "five datagrams")
    assert messages[:3] == [
        {"READY": "1", "STATUS": "up"},
        {"STATUS": "still up"},
        {"EXTEND_TIMEOUT_USEC": "1000"},
    ]
    assert messages[3].keys() == {"RELOADING", "MONOTONIC_USEC"}
    assert messages[4] == {"STOPPING": "1"}


# --- real datagrams ---------------------------------------------------------------------------
def test_datagrams_reach_a_path_socket(notify_socket: FakeNotifySocket) -> None:
    """Assignments sent together arrive as one datagram at a filesystem socket."""
    transport = DatagramTransport(notify_socket.sock.getsockname())
    notifier = Notifier(transport)
    notifier.ready("booted")
    notifier.reloading()
    notify_socket.wait_for(lambda m: len(m) == 2, "two datagrams")
    assert notify_socket.messages[0] == {"READY": "1", "STATUS": "booted"}
    reloading = notify_socket.messages[1]
    assert reloading.keys() == {"RELOADING", "MONOTONIC_USEC"}
    # MONOTONIC_USEC is CLOCK_MONOTONIC, the clock systemd compares it with.
    assert abs(int(reloading["MONOTONIC_USEC"]) - monotonic_usec()) < 5_000_000
    transport.close()


def test_datagrams_reach_an_abstract_socket() -> None:
    """NOTIFY_SOCKET=@name reaches the abstract-namespace socket of that name."""
    name = f"corral-test-{os.getpid()}-{time.monotonic_ns()}"
    fake = FakeNotifySocket(b"\0" + name.encode())
    try:
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": "@" + name})
        notifier.stopping()
        fake.wait_for(lambda m: m == [{"STOPPING": "1"}], "STOPPING=1")
        notifier.close()
    finally:
        fake.close()


def test_a_missing_socket_is_logged_once_and_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A notify socket that is gone never breaks the server: one warning, no exception."""
    notifier = Notifier(DatagramTransport(str(tmp_path / "gone.sock")))
    notifier.ready()
    notifier.stopping()
    warnings = [r for r in caplog.records if "Could not notify systemd" in r.getMessage()]
    assert len(warnings) == 1


def test_fake_socket_closes_passed_descriptors(notify_socket: FakeNotifySocket) -> None:
    """The fake socket closes fds sent with a message (as systemd would store or drop them)."""
    read_end, write_end = os.pipe()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [read_end]))]
            client.sendmsg([b"FDSTORE=1"], rights, 0, notify_socket.sock.getsockname())
        notify_socket.wait_for(lambda m: m == [{"FDSTORE": "1"}], "FDSTORE=1")
        assert notify_socket.fds_closed == 1
    finally:
        os.close(read_end)
        os.close(write_end)


# --- the master with fake workers -------------------------------------------------------------
# Runs the real Master and its notifier with fake workers speaking the channel protocol:
# booting takes BOOT seconds, draining DRAIN seconds. The extension re-send interval is
# shortened so a one-second boot shows it repeated.
MASTER = r"""
import os, select, signal, sys, time
import corral.supervisor.sdnotify as sdnotify
from corral.config import Config
from corral.logging import configure_logging
from corral.supervisor.master import Master
from corral.supervisor.systemd import MasterNotifier, Notifier
from corral.worker import channel

sdnotify.EXTEND_RESEND = 0.2
BOOT, DRAIN = float(sys.argv[2]), float(sys.argv[3])

def worker(sock, slot, generation):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    def drain(*_):
        time.sleep(DRAIN)
        os._exit(0)
    signal.signal(signal.SIGTERM, drain)  # a stop drains for DRAIN seconds
    sock.sendall(channel.booting(os.getpid()))
    time.sleep(BOOT)
    sock.sendall(channel.ready())
    while True:
        sock.sendall(channel.beat(0))
        if select.select([sock], [], [], 0.5)[0]:
            data = sock.recv(256)
            if not data or data.startswith(b"DRAIN"):
                time.sleep(DRAIN)
                return 0

config = Config(app="fake:app", workers=int(sys.argv[1]))
configure_logging(config)
master = Master(config, [], worker)
master.notifier = MasterNotifier(Notifier.from_environ())
master.hooks.append(master.notifier.on_event)
sys.exit(int(master.run()))
"""


def lifecycle(messages: list[dict[str, str]]) -> list[str]:
    """The lifecycle assignments in order, ignoring STATUS, WATCHDOG and extensions."""
    keys = ("READY", "RELOADING", "STOPPING")
    return [key for message in messages for key in keys if key in message]


def test_master_notify_sequence(notify_socket: FakeNotifySocket, tmp_path: Path) -> None:
    """A real master: READY, RELOADING+MONOTONIC_USEC, READY, STOPPING with the rest between."""
    env = dict(
        os.environ,
        NOTIFY_SOCKET=notify_socket.sock.getsockname(),
        WATCHDOG_USEC="400000",
        PYTHONUNBUFFERED="1",
    )
    log = open(tmp_path / "master.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-c", MASTER, "2", "1.0", "0.6"], env=env, stderr=log, cwd=ROOT
    )
    try:
        messages = notify_socket.wait_for(lambda m: "READY" in lifecycle(m), "READY=1")
        first_ready = next(i for i, m in enumerate(messages) if "READY" in m)
        boot = messages[:first_ready]
        # The boot took a second: the extension was sent and re-sent while it progressed.
        assert sum("EXTEND_TIMEOUT_USEC" in m for m in boot) >= 2
        assert any("WATCHDOG" in m for m in boot)
        # READY only once both workers of the first generation were ready.
        assert messages[first_ready]["STATUS"].startswith("2/2 workers ready, generation 1")
        assert any(m.get("STATUS", "").startswith("0/2") for m in boot)
        assert any(m.get("STATUS", "").startswith("1/2") for m in boot)

        before = monotonic_usec()
        proc.send_signal(signal.SIGHUP)
        messages = notify_socket.wait_for(
            lambda m: lifecycle(m) == ["READY", "RELOADING", "READY"], "reload to finish"
        )
        reloading = next(m for m in messages if "RELOADING" in m)
        assert before <= int(reloading["MONOTONIC_USEC"]) <= monotonic_usec()
        assert reloading["STATUS"].startswith("Reloading:")
        done = messages[[i for i, m in enumerate(messages) if "READY" in m][1]]
        assert done["STATUS"].startswith("2/2 workers ready, generation 2")

        count = len(messages)
        notify_socket.wait_for(
            lambda m: sum("WATCHDOG" in x for x in m[count:]) >= 2, "watchdog pings while ready"
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(DEADLINE) == 0
        notify_socket.drain()
        messages = notify_socket.messages
        assert lifecycle(messages) == ["READY", "RELOADING", "READY", "STOPPING"]
        stopping = next(i for i, m in enumerate(messages) if "STOPPING" in m)
        # The drain took over half a second: extensions followed STOPPING=1.
        assert sum("EXTEND_TIMEOUT_USEC" in m for m in messages[stopping:]) >= 2
        assert messages[stopping]["STATUS"].startswith("Stopping:")
        # Nothing but lifecycle, STATUS, WATCHDOG and extensions was ever sent.
        allowed = {"READY", "RELOADING", "MONOTONIC_USEC", "STOPPING", "STATUS", "WATCHDOG"}
        allowed.add("EXTEND_TIMEOUT_USEC")
        assert all(set(m) <= allowed for m in messages)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


# --- corral end to end --------------------------------------------------------------------------
def start_corral(
    tmp_path: Path, notify: FakeNotifySocket, *args: str, **env: str
) -> tuple[subprocess.Popen[str], LogFile, tuple[str, int]]:
    """corral on a TCP socket passed by the harness, notifying the fake socket."""
    web = tcp_listener()
    environ = dict(os.environ, NOTIFY_SOCKET=notify.sock.getsockname(), **env)
    log = LogFile(tmp_path / "corral.log")
    proc = launch_activated(
        corral_argv(*write_app(tmp_path), *args), [web], env=environ, stderr=log.handle
    )
    address = web.getsockname()
    web.close()  # corral holds its own copy
    return proc, log, address


def test_corral_master_notify_sequence(notify_socket: FakeNotifySocket, tmp_path: Path) -> None:
    """corral --workers 2 over HTTP: READY, RELOADING, READY, STOPPING, pings between."""
    proc, log, address = start_corral(
        tmp_path, notify_socket, "--workers", "2", WATCHDOG_USEC="500000"
    )
    try:
        messages = notify_socket.wait_for(lambda m: "READY" in lifecycle(m), "READY=1")
        ready = next(m for m in messages if "READY" in m)
        assert ready["STATUS"].startswith("2/2 workers ready, generation 1")
        assert log.text().count("Application startup complete.") == 2
        status, _, body = http_get(address, path="/env")
        assert status == 200 and json.loads(body)["NOTIFY_SOCKET"] is None
        proc.send_signal(signal.SIGHUP)
        messages = notify_socket.wait_for(
            lambda m: lifecycle(m) == ["READY", "RELOADING", "READY"], "the reload"
        )
        assert "MONOTONIC_USEC" in next(m for m in messages if "RELOADING" in m)
        assert "Reload complete" in log.text()
        assert http_get(address)[0] == 200
        count = len(messages)
        notify_socket.wait_for(lambda m: any("WATCHDOG" in x for x in m[count:]), "a ping")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(DEADLINE) == 0
        notify_socket.drain()
        assert lifecycle(notify_socket.messages) == ["READY", "RELOADING", "READY", "STOPPING"]
        assert any("STATUS" in m for m in notify_socket.messages)
    finally:
        stop(proc, log)


def test_corral_single_process_notifies(notify_socket: FakeNotifySocket, tmp_path: Path) -> None:
    """Single-process corral: boot time extended, READY once serving, watchdog from its loop,
    STOPPING on SIGTERM with the stop time extended to corral's own drain bound."""
    proc, log, address = start_corral(tmp_path, notify_socket, WATCHDOG_USEC="200000")
    try:
        messages = notify_socket.wait_for(lambda m: "READY" in lifecycle(m), "READY=1")
        first = messages[0]
        # Boot: --timeout-worker-boot (60 s) plus the margin, before READY=1.
        assert "EXTEND_TIMEOUT_USEC" in first and "READY" not in first
        assert 60_000_000 <= int(first["EXTEND_TIMEOUT_USEC"]) <= 70_000_000
        assert "Application startup complete." in log.text()
        assert http_get(address)[0] == 200
        notify_socket.wait_for(lambda m: sum("WATCHDOG" in x for x in m) >= 3, "pings")
        count = len(notify_socket.messages)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(DEADLINE) == 0
        notify_socket.drain()
        assert lifecycle(notify_socket.messages) == ["READY", "STOPPING"]
        # Stop: shutdown delay (0) + graceful (30 s) + lifespan shutdown (10 s), plus margin.
        extensions = [
            int(m["EXTEND_TIMEOUT_USEC"])
            for m in notify_socket.messages[count:]
            if "EXTEND_TIMEOUT_USEC" in m
        ]
        assert extensions and 40_000_000 <= extensions[0] <= 50_000_000
    finally:
        stop(proc, log)


def test_corral_without_notify_socket_runs_as_usual(tmp_path: Path) -> None:
    """With no NOTIFY_SOCKET (and WATCHDOG_USEC alone) corral serves and stops normally."""
    web = tcp_listener()
    log = LogFile(tmp_path / "corral.log")
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    env["WATCHDOG_USEC"] = "100000"
    proc = launch_activated(
        corral_argv(*write_app(tmp_path), "--workers", "1"), [web], env=env, stderr=log.handle
    )
    try:
        log.wait("ready")
        assert http_get(web.getsockname())[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(DEADLINE) == 0
        assert "notify" not in log.text().lower()
    finally:
        web.close()
        stop(proc, log)


def test_preload_reload_reexec_keeps_notifying(
    notify_socket: FakeNotifySocket, tmp_path: Path
) -> None:
    """A --preload re-exec (same pid) says RELOADING before and READY plus pings after."""
    proc, log, address = start_corral(
        tmp_path, notify_socket, "--workers", "2", "--preload", WATCHDOG_USEC="400000"
    )
    try:
        notify_socket.wait_for(lambda m: "READY" in lifecycle(m), "READY=1")
        proc.send_signal(signal.SIGHUP)
        messages = notify_socket.wait_for(
            lambda m: lifecycle(m) == ["READY", "RELOADING", "READY"], "the re-exec reload"
        )
        assert "Re-executing the master" in log.text()
        assert "MONOTONIC_USEC" in next(m for m in messages if "RELOADING" in m)
        assert http_get(address)[0] == 200
        count = len(messages)
        notify_socket.wait_for(
            lambda m: sum("WATCHDOG" in x for x in m[count:]) >= 2, "pings from the new image"
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(DEADLINE) == 0  # the same process systemd started
        notify_socket.drain()
        assert lifecycle(notify_socket.messages) == ["READY", "RELOADING", "READY", "STOPPING"]
    finally:
        stop(proc, log)


def test_status_counts_recent_restarts(notify_socket: FakeNotifySocket, tmp_path: Path) -> None:
    """A SIGKILLed worker counts as a recent restart in STATUS= and READY=1 isn't repeated."""
    import psutil

    proc, log, address = start_corral(tmp_path, notify_socket, "--workers", "2")
    try:
        notify_socket.wait_for(lambda m: "READY" in lifecycle(m), "READY=1")
        victim = psutil.Process(proc.pid).children()[0]
        victim.kill()
        notify_socket.wait_for(
            lambda m: any(
                x.get("STATUS") == "2/2 workers ready, generation 1, 1 recent restart" for x in m
            ),
            "the restart in STATUS",
        )
        assert any(
            x.get("STATUS", "").startswith("1/2 workers ready") for x in notify_socket.messages
        )
        assert http_get(address)[0] == 200
        assert lifecycle(notify_socket.messages) == ["READY"]
    finally:
        stop(proc, log)


BREAKABLE = """
import os

if os.path.exists(os.environ["BREAK_MARKER"]):
    raise RuntimeError("this deploy is broken")


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
"""


def test_failed_reload_still_ends_with_ready(
    notify_socket: FakeNotifySocket, tmp_path: Path
) -> None:
    """A reload whose new code fails to import still ends with READY=1 (old workers serve)."""
    (tmp_path / "breakable.py").write_text(BREAKABLE)
    marker = tmp_path / "broken"
    web = tcp_listener()
    env = dict(os.environ, NOTIFY_SOCKET=notify_socket.sock.getsockname(), BREAK_MARKER=str(marker))
    log = LogFile(tmp_path / "corral.log")
    argv = corral_argv("breakable:app", "--app-dir", str(tmp_path), "--workers", "2")
    proc = launch_activated(argv, [web], env=env, stderr=log.handle)
    address = web.getsockname()
    web.close()
    try:
        notify_socket.wait_for(lambda m: "READY" in lifecycle(m), "READY=1")
        marker.write_text("")
        proc.send_signal(signal.SIGHUP)
        messages = notify_socket.wait_for(
            lambda m: lifecycle(m) == ["READY", "RELOADING", "READY"], "the failed reload"
        )
        assert "keeps serving" in log.text()
        last_ready = [m for m in messages if "READY" in m][-1]
        assert last_ready["STATUS"].startswith("2/2 workers ready, generation 1")
        status, _, body = http_get(address)
        assert (status, body) == (200, "ok")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(DEADLINE) == 0
    finally:
        stop(proc, log)
