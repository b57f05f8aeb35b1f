"""The real Master with real fork and signals, driving fake workers (no HTTP).

Each test runs ``python -m tests.master_apps SCENARIO N ...`` in a subprocess and waits on
log lines and process state against deadlines.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.master_apps import Running, title, wait_until

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def run_fake(tmp_path: Path) -> Iterator[Any]:
    started: list[Running] = []

    def start(
        scenario: str, workers: int, *settings: str, env: dict[str, str] | None = None
    ) -> Running:
        args = [sys.executable, "-m", "tests.master_apps", scenario, str(workers), *settings]
        proc = Running(args, str(tmp_path / f"master{len(started)}.log"), cwd=ROOT, env=env or {})
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def test_workers_start_with_titles_and_stop_on_term(run_fake: Any) -> None:
    """Three workers boot with process titles; TERM drains them and the master exits 0."""
    m = run_fake("ok", 3)
    m.wait_log("ready", count=3)
    kids = m.children()
    assert len(kids) == 3
    assert "corral: master [tests.master_apps:app]" in title(m.pid)
    assert sorted(title(k) for k in kids) == [
        f"corral: worker {n} [tests.master_apps:app]" for n in (1, 2, 3)
    ]
    m.signal(signal.SIGTERM)
    assert m.wait(15) == 0
    assert not [k for k in kids if psutil.pid_exists(k)]  # reaped by the master before exit


def test_kill9_worker_is_respawned(run_fake: Any) -> None:
    """A worker killed with SIGKILL is reaped, logged with its signal, and replaced."""
    m = run_fake("ok", 2)
    m.wait_log("ready", count=2)
    victim = m.children()[0]
    os.kill(victim, signal.SIGKILL)
    log = m.wait_log("ready", count=3)
    assert f"(pid {victim}) killed by SIGKILL (crash)" in log
    wait_until(lambda: len(m.children()) == 2 and victim not in m.children(), 10)


def test_hung_worker_is_aborted_and_replaced(run_fake: Any) -> None:
    """A worker that stops beating gets SIGABRT after the health-check timeout, then a successor."""
    m = run_fake("hang", 2, "timeout_worker_healthcheck=1")
    log = m.wait_log("sending SIGABRT", timeout=10)
    assert "no heartbeat" in log
    log = m.wait_log("ready", count=3, timeout=10)
    m.wait_log("killed by SIG", timeout=10)


def test_boot_failure_before_ready_exits_3_once(run_fake: Any) -> None:
    """Workers that never become READY make the master exit 3, after one attempt each."""
    m = run_fake("fail", 4)
    assert m.wait(15) == 3
    log = m.log()
    assert log.count("Started worker") == 4  # all at once at the initial start
    assert log.count("Application failed to start") == 1
    assert "next start in" not in log


def test_failed_reload_keeps_old_generation_and_retry_works(run_fake: Any, tmp_path: Path) -> None:
    """HUP with a failing new generation keeps the old workers; a later HUP succeeds."""
    fail = tmp_path / "fail"
    m = run_fake("ok", 2, env={"FAKE_FAIL_FILE": str(fail)})
    m.wait_log("ready", count=2)
    old = sorted(m.children())
    fail.touch()
    m.signal(signal.SIGHUP)
    log = m.wait_log("failed to boot; generation 1 keeps serving")
    assert sorted(m.children()) == old
    assert log.count("Started worker") == 3  # one canary only
    fail.unlink()
    m.signal(signal.SIGHUP)
    m.wait_log("Reload complete: generation 3")
    wait_until(lambda: not set(m.children()) & set(old), 10, "old workers gone")
    assert len(m.children()) == 2


def test_ttin_ttou(run_fake: Any) -> None:
    """TTIN adds a worker, TTOU removes one, never below one."""
    m = run_fake("ok", 1)
    m.wait_log("ready", count=1)
    m.signal(signal.SIGTTIN)
    m.wait_log("ready", count=2)
    wait_until(lambda: len(m.children()) == 2, 10)
    m.signal(signal.SIGTTOU)
    wait_until(lambda: len(m.children()) == 1, 10)
    m.signal(signal.SIGTTOU)
    m.wait_log("Started worker", count=2)
    assert len(m.children()) == 1


def test_master_sigkill_orphans_exit(run_fake: Any) -> None:
    """When the master dies, the workers see channel EOF and exit by themselves."""
    m = run_fake("ok", 2)
    m.wait_log("ready", count=2)
    kids = [psutil.Process(k) for k in m.children()]
    m.signal(signal.SIGKILL)
    m.wait(10)
    _, alive = psutil.wait_procs(kids, timeout=10)
    assert alive == []


def test_preload_hup_reexecs_master_in_place(run_fake: Any) -> None:
    """With --preload, HUP re-executes the master (same pid), which adopts and then drains
    the old workers only after their replacements are READY."""
    m = run_fake("ok", 2, "preload=1")
    m.wait_log("ready", count=2)
    old = sorted(m.children())
    m.signal(signal.SIGHUP)
    log = m.wait_log("Reload complete: generation 2", timeout=20)
    assert "Re-executing the master in place" in log
    assert "Adopted 2 worker(s) of generation 1" in log
    assert m.proc.poll() is None  # same process, still running
    wait_until(lambda: len(m.children()) == 2 and not set(m.children()) & set(old), 10)
    assert log.count("Draining worker") == 2
    m.signal(signal.SIGTERM)
    assert m.wait(15) == 0


def test_boot_timeout_exits_3(run_fake: Any) -> None:
    """A first worker that never reports READY is aborted at the boot timeout; exit 3."""
    m = run_fake("slowboot", 2, "timeout_worker_boot=1")
    assert m.wait(15) == 3
    log = m.log()
    assert "boot timeout (1s): sending SIGABRT" in log
    assert log.count("Started worker") == 2


def test_healthy_workers_killed_together_are_replaced_at_once(run_fake: Any) -> None:
    """kill -9 of every worker, each READY for over a second: all replaced, no backoff
    (a shared streak used to call that a crash loop and delay the restarts)."""
    m = run_fake("ok", 4)
    for round_ in range(1, 3):
        m.wait_log("ready", count=4 * round_)
        victims = m.children()
        wait_until(lambda v=victims: all(_age(p) > 1.3 for p in v), 10, "workers served 1 s")
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        m.wait_log("ready", count=4 * (round_ + 1), timeout=10)
    assert "next start in" not in m.log()
    assert m.log().count("killed by SIGKILL (crash)") == 8


def _age(pid: int) -> float:
    import time

    return time.time() - psutil.Process(pid).create_time()


def test_crash_loop_backs_off_exponentially(run_fake: Any) -> None:
    """A worker that dies right after READY is respawned with a growing, logged backoff."""
    m = run_fake("crash", 1)
    log = m.wait_log("next start in 1.0s", timeout=15)
    assert "Worker 1 died 2 times in a row before serving for 1s; next start in 0.5s" in log
    assert "exited with code 1 (crash)" in log
    assert m.proc.poll() is None  # a crash loop never stops the master
