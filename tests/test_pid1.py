"""Containers: corral as PID 1 (a new PID namespace), and the Kubernetes drain delay with the
health path's flip.

The PID-1 tests run corral under ``unshare --pid --fork`` and skip only when creating a PID
namespace is not permitted. Signals go straight to the namespace's PID 1 (unshare itself
does not forward them), exactly as a container runtime delivers SIGTERM.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from corral.config import Config

from tests.test_activation import (
    DEADLINE,
    LogFile,
    corral_argv,
    http_get,
    stop,
    wait_for,
    write_app,
)


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    try:
        probe = subprocess.run(
            ["unshare", "--pid", "--fork", "true"], capture_output=True, timeout=DEADLINE
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


ROOT = Path(__file__).resolve().parent.parent

needs_pid_namespace = pytest.mark.skipif(
    not _unshare_works(), reason="creating a PID namespace (unshare --pid) is not permitted"
)


class Served:
    """corral started by the test, its log, the pid to signal and the port it serves."""

    def __init__(self, tmp_path: Path, *args: str, pid_namespace: bool = False) -> None:
        self.log = LogFile(tmp_path / "corral.log")
        argv = corral_argv(*write_app(tmp_path), "--port", "0", *args)
        if pid_namespace:
            argv = ["unshare", "--pid", "--fork", "--kill-child", *argv]
        self.launcher = subprocess.Popen(argv, stderr=self.log.handle, text=True)
        self.pid = self.launcher.pid
        if pid_namespace:
            # unshare forks once; its only child is PID 1 of the new namespace.
            children = wait_for(lambda: psutil.Process(self.launcher.pid).children(), "PID 1")
            assert isinstance(children, list)
            self.pid = children[0].pid
        match = wait_for(
            lambda: re.search(r"running on http://127\.0\.0\.1:(\d+)", self.log.text()),
            "the banner",
        )
        assert isinstance(match, re.Match)
        self.address = ("127.0.0.1", int(match.group(1)))

    def namespace_pid(self) -> int:
        """This process's pid inside its own (innermost) PID namespace."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
        raise AssertionError("no NSpid line")

    def signal(self, signum: int) -> None:
        psutil.Process(self.pid).send_signal(signum)

    def wait(self, timeout: float = DEADLINE) -> int:
        return self.launcher.wait(timeout)

    def stop(self) -> None:
        stop(self.launcher, self.log)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[list[Served]]:
    started: list[Served] = []
    yield started
    for item in started:
        item.stop()


def zombies_of(pid: int) -> list[int]:
    out = []
    for child in psutil.Process(pid).children():
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                out.append(child.pid)
        except psutil.NoSuchProcess:
            continue
    return out


class Slow(threading.Thread):
    """A request in flight: GET /slow?SECONDS on its own thread."""

    def __init__(self, address: tuple[str, int], seconds: float) -> None:
        super().__init__()
        self.address, self.seconds = address, seconds
        self.result: tuple[int, dict[str, str], str] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = http_get(self.address, path=f"/slow?{self.seconds}")
        except BaseException as exc:
            self.error = exc


# --- PID 1 -----------------------------------------------------------------------------------
@needs_pid_namespace
def test_master_as_pid1_reaps_orphans_and_drains_on_sigterm(
    tmp_path: Path, served: list[Served]
) -> None:
    """As PID 1 the master reaps orphans and drains an in-flight request on SIGTERM, exit 0."""
    corral = Served(tmp_path, "--workers", "2", pid_namespace=True)
    served.append(corral)
    corral.log.wait("ready", count=2)
    assert corral.namespace_pid() == 1
    workers = [c.pid for c in psutil.Process(corral.pid).children()]

    # The worker's shell exits at once; its background sleep becomes the master's child.
    assert http_get(corral.address, path="/orphan")[2] == "spawned"
    orphans = wait_for(
        lambda: [c.pid for c in psutil.Process(corral.pid).children() if c.pid not in workers],
        "the orphan to be re-parented to PID 1",
    )
    assert isinstance(orphans, list)
    # When it exits, the master reaps it: no zombie is left behind.
    wait_for(lambda: not psutil.pid_exists(orphans[0]), "the orphan to be reaped")
    assert zombies_of(corral.pid) == []

    slow = Slow(corral.address, 1.0)
    slow.start()
    corral.log.wait("slow request started")
    corral.signal(signal.SIGTERM)
    slow.join(DEADLINE)
    assert slow.error is None and slow.result is not None
    assert slow.result[0] == 200
    assert corral.wait() == 0
    assert not [pid for pid in workers if psutil.pid_exists(pid)]


@needs_pid_namespace
def test_single_process_as_pid1_warns_about_orphans(tmp_path: Path, served: list[Served]) -> None:
    """Single-process PID 1 warns orphans aren't reaped, suggests --workers 1, stops cleanly."""
    corral = Served(tmp_path, pid_namespace=True)
    served.append(corral)
    text = corral.log.wait("Application startup complete.")
    assert corral.namespace_pid() == 1
    assert "orphaned child processes will not be reaped" in text
    assert "--workers 1" in text
    assert http_get(corral.address)[0] == 200
    corral.signal(signal.SIGTERM)
    assert corral.wait() == 0


def test_no_pid1_warning_outside_a_container(tmp_path: Path, served: list[Served]) -> None:
    """Not PID 1: no warning about orphans."""
    corral = Served(tmp_path)
    served.append(corral)
    text = corral.log.wait("Application startup complete.")
    assert "orphan" not in text
    corral.signal(signal.SIGTERM)
    assert corral.wait() == 0


# --- Kubernetes drain ------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [None, 1], ids=["single", "master"])
def test_shutdown_delay_keeps_serving_and_flips_health(
    tmp_path: Path, served: list[Served], workers: int | None
) -> None:
    """SIGTERM flips the health path to 503 and serves with Connection: close for the delay."""
    args = ["--health-path", "/healthz", "--timeout-shutdown-delay", "1.5"]
    if workers:
        args += ["--workers", str(workers)]
    corral = Served(tmp_path, *args)
    served.append(corral)
    corral.log.wait("Application startup complete.")
    status, _, body = http_get(corral.address, path="/healthz")
    assert status == 200
    assert "pid=" not in body  # answered by corral, not the app
    assert http_get(corral.address)[0] == 200

    corral.signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    wait_for(lambda: http_get(corral.address, path="/healthz")[0] == 503, "health to flip")
    # Still inside the delay: a fresh connection is served, and told to go away after.
    status, headers, body = http_get(corral.address)
    assert time.monotonic() - stopped_at < 1.5
    assert status == 200 and body.startswith("pid=")
    assert headers.get("connection") == "close"
    assert corral.wait() == 0
    # It kept serving for the delay before stopping.
    assert time.monotonic() - stopped_at >= 1.5


# --- the example Dockerfile ------------------------------------------------------------------
DOCKERFILE = ROOT / "examples" / "Dockerfile"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    out = []
    for line in joined:
        instruction, _, arguments = line.partition(" ")
        out.append((instruction.upper(), arguments.strip()))
    return out


def parse_cli(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> Config:
    """What corral's own command line makes of ``argv`` (without serving)."""
    import corral.cli

    seen: list[Config] = []
    monkeypatch.setattr(corral.cli, "serve", lambda config: seen.append(config) or 0)
    with pytest.raises(SystemExit) as info:
        corral.cli.main(argv)
    assert info.value.code == 0
    return seen[0]


def test_dockerfile_runs_corral_unprivileged_in_exec_form(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Dockerfile runs `corral app:app --host 0.0.0.0 ...` exec-form, non-root, unbuffered."""
    steps = dockerfile_instructions()
    values = {}
    for instruction, arguments in steps:
        values.setdefault(instruction, []).append(arguments)
    assert re.fullmatch(r"python:3\.1[1-9]-slim", values["FROM"][0])
    assert values["USER"][-1] not in ("root", "0")
    env = " ".join(values["ENV"])
    assert re.search(r"\bPYTHONUNBUFFERED=1\b", env)
    entrypoint = json.loads(values["ENTRYPOINT"][-1])
    command = json.loads(values["CMD"][-1])
    assert entrypoint == ["corral"]
    assert command[:3] == ["app:app", "--host", "0.0.0.0"]
    config = parse_cli(command, monkeypatch)
    assert config.app == "app:app" and config.bind_host == "0.0.0.0"
    assert config.supervised  # the master, so PID 1 reaps orphans
    assert config.health_path is not None and config.timeout_shutdown_delay > 0
    for arguments in values["COPY"]:
        *sources, _ = arguments.split()
        for source in sources:
            assert (ROOT / source).exists(), source
