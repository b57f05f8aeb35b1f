"""The master end to end: `python -m corral ... --workers N` with real HTTP, fork and signals.

Every wait polls a condition (a log line, a response, process state) against a deadline.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.master_apps import Hammer, Running, get, title, wait_until, write_app

ROOT = Path(__file__).resolve().parent.parent


class Server(Running):
    port: int

    def wait_ready(self, workers: int, timeout: float = 20.0) -> None:
        log = self.wait_log(") ready", count=workers, timeout=timeout)
        match = re.search(r"corral running on http://127\.0\.0\.1:(\d+)", log)
        assert match, log
        self.port = int(match.group(1))

    def worker_pids(self) -> set[int]:
        return set(self.children())


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    started: list[Server] = []

    def start(
        app: str,
        *args: str,
        app_dir: Path | None = None,
        access_log: bool = False,
        **popen: Any,
    ) -> Server:
        cmd = [sys.executable, "-m", "corral", app, "--port", "0", *args]
        if not access_log:
            cmd.append("--no-access-log")
        if app_dir is not None:
            cmd += ["--app-dir", str(app_dir)]
        server = Server(cmd, str(tmp_path / f"server{len(started)}.log"), cwd=ROOT, **popen)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


APP = "tests.master_apps:app"


@pytest.mark.smoke
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_three_workers_serve_with_titles(serve: Any, loop: str) -> None:
    """Three workers come up with their process titles and all answer requests."""
    s = serve(APP, "--workers", "3", "--loop", loop)
    s.wait_ready(3)
    log = s.log()
    assert f"Started parent process [{s.pid}]" in log
    assert f"corral running on http://127.0.0.1:{s.port} (Press CTRL+C to quit)" in log
    pids = s.worker_pids()
    assert len(pids) == 3
    assert title(s.pid).startswith(f"corral: master [{APP}]")
    assert {title(p) for p in pids} == {f"corral: worker {n} [{APP}]" for n in (1, 2, 3)}
    assert get(s.port)[0] == 200


def test_kill9_and_exiting_request_are_respawned(serve: Any) -> None:
    """A SIGKILLed worker and one whose request makes it exit are both replaced."""
    s = serve(APP, "--workers", "2")
    s.wait_ready(2)
    victim = min(s.worker_pids())
    os.kill(victim, signal.SIGKILL)
    log = s.wait_log(") ready", count=3)
    assert f"(pid {victim}) killed by SIGKILL" in log
    with pytest.raises(Exception):  # noqa: B017 (the connection drops: any client error)
        get(s.port, "/exit")
    log = s.wait_log(") ready", count=4)
    assert "exited with code 7" in log
    wait_until(lambda: len(s.worker_pids()) == 2, 10, "two workers again")
    assert get(s.port)[0] == 200


def test_blocked_loop_is_detected_dumped_and_replaced(serve: Any) -> None:
    """A request that blocks its worker's loop: SIGABRT with a stack dump, then a successor."""
    s = serve(APP, "--workers", "1", "--timeout-worker-healthcheck", "2")
    s.wait_ready(1)
    blocked = s.worker_pids().pop()
    threading.Thread(
        target=lambda: _swallow(lambda: get(s.port, "/block?s=60")), daemon=True
    ).start()
    log = s.wait_log("sending SIGABRT", timeout=10)
    assert f"(pid {blocked}) no heartbeat" in log
    log = s.wait_log(") ready", count=2, timeout=10)
    assert "most recent call first" in log  # faulthandler's dump
    assert "in app" in log  # ... showing the app frame that blocks
    assert f"(pid {blocked}) killed by SIGABRT" in log
    assert get(s.port)[0] == 200


def _swallow(call: Any) -> None:
    try:
        call()
    except Exception:
        pass


def test_memory_limit_replaces_worker_while_serving(serve: Any) -> None:
    """A worker growing past --limit-worker-memory is replaced; requests keep succeeding."""
    s = serve(APP, "--workers", "1", "--limit-worker-memory", "80")
    s.wait_ready(1)
    grower = s.worker_pids().pop()
    hammer = Hammer(s.port, clients=2)
    try:
        assert get(s.port, "/grow?mib=100")[0] == 200
        log = s.wait_log("over memory limit", timeout=10)
        assert re.search(rf"worker 1 \(pid {grower}\) over memory limit: \d+ MiB > 80 MiB", log)
        s.wait_log(") ready", count=2)
        wait_until(lambda: grower not in s.worker_pids(), 15, "old worker gone")
    finally:
        hammer.stop()
    assert hammer.failures == [] and hammer.ok > 0


@pytest.mark.smoke
@pytest.mark.parametrize("keep_alive", [False, True], ids=["fresh", "keep-alive"])
def test_hup_under_load_replaces_every_worker_without_failures(
    serve: Any, keep_alive: bool
) -> None:
    """HUP while four clients hammer, on fresh or on reused keep-alive connections: every
    worker replaced, zero failures (a draining worker answers each connection's next request
    with Connection: close instead of resetting it)."""
    s = serve(APP, "--workers", "2")
    s.wait_ready(2)
    old = s.worker_pids()
    hammer = Hammer(s.port, clients=4, keep_alive=keep_alive)
    try:
        wait_until(lambda: hammer.ok > 50, 10, "load running")
        s.signal(signal.SIGHUP)
        s.wait_log("Reload complete", timeout=20)
        wait_until(lambda: not (s.worker_pids() & old), 15, "old workers gone")
        before = hammer.ok
        wait_until(lambda: hammer.ok > before + 50, 10, "load continues")
    finally:
        hammer.stop()
    assert hammer.failures == []
    assert len(s.worker_pids()) == 2


def test_hup_with_broken_code_keeps_serving_then_fixed_hup_succeeds(
    serve: Any, tmp_path: Path
) -> None:
    """A broken import on HUP keeps the old generation serving; a fixed HUP then works."""
    write_app(tmp_path / "versioned.py", "1")
    s = serve("versioned:app", "--workers", "2", app_dir=tmp_path)
    s.wait_ready(2)
    hammer = Hammer(s.port, clients=4)
    try:
        write_app(tmp_path / "versioned.py", "2", broken=True)
        s.signal(signal.SIGHUP)
        log = s.wait_log("failed to boot; generation 1 keeps serving", timeout=20)
        assert log.count("this version is broken") >= 1
        assert get(s.port)[1].startswith("version=1")
        write_app(tmp_path / "versioned.py", "3")
        s.signal(signal.SIGHUP)
        s.wait_log("Reload complete: generation 3", timeout=20)
        wait_until(lambda: get(s.port)[1].startswith("version=3"), 10, "new code served")
    finally:
        hammer.stop()
    assert hammer.failures == []
    assert hammer.bodies <= {"version=1", "version=3"}


@pytest.mark.smoke
def test_preload_hup_serves_changed_code_with_same_master_pid(serve: Any, tmp_path: Path) -> None:
    """With --preload, HUP re-executes the master in place and serves the new code."""
    write_app(tmp_path / "versioned.py", "1")
    s = serve("versioned:app", "--workers", "2", "--preload", app_dir=tmp_path)
    s.wait_ready(2)
    hammer = Hammer(s.port, clients=2)
    try:
        write_app(tmp_path / "versioned.py", "2")
        s.signal(signal.SIGHUP)
        s.wait_log("Reload complete", timeout=30)
        wait_until(lambda: get(s.port)[1].startswith("version=2"), 10, "new code served")
    finally:
        hammer.stop()
    assert s.proc.poll() is None
    assert f"Started parent process [{s.pid}]" in s.log()
    assert hammer.failures == []


def test_preload_hup_keeps_the_worker_count_changed_by_ttin(serve: Any, tmp_path: Path) -> None:
    """A --preload re-exec keeps the worker count TTIN set, not --workers."""
    write_app(tmp_path / "versioned.py", "1")
    s = serve("versioned:app", "--workers", "1", "--preload", app_dir=tmp_path)
    s.wait_ready(1)
    s.signal(signal.SIGTTIN)
    wait_until(lambda: len(s.worker_pids()) == 2, 10, "a second worker")
    s.wait_log(") ready", count=2)
    write_app(tmp_path / "versioned.py", "2")
    s.signal(signal.SIGHUP)
    s.wait_log("Reload complete", timeout=30)
    assert "serving with 2 worker(s)" in s.log()
    wait_until(lambda: get(s.port)[1].startswith("version=2"), 10, "new code served")
    wait_until(lambda: len(s.worker_pids()) == 2, 10, "two workers after the re-exec")


def test_max_requests_recycles_without_failures(serve: Any) -> None:
    """--limit-max-requests retires workers (replacement first) with zero failed requests."""
    s = serve(
        APP, "--workers", "2", "--limit-max-requests", "40", "--limit-max-requests-jitter", "10"
    )
    s.wait_ready(2)
    hammer = Hammer(s.port, clients=4)
    try:
        s.wait_log(") ready", count=5, timeout=30)
    finally:
        hammer.stop()
    log = s.log()
    assert "reached its max-requests limit, replacing" in log
    assert hammer.failures == []


def test_ttin_ttou(serve: Any) -> None:
    """TTIN adds a serving worker, TTOU drains one."""
    s = serve(APP, "--workers", "1")
    s.wait_ready(1)
    s.signal(signal.SIGTTIN)
    s.wait_log(") ready", count=2)
    wait_until(lambda: len(s.worker_pids()) == 2, 10)
    s.signal(signal.SIGTTOU)
    wait_until(lambda: len(s.worker_pids()) == 1, 10)
    assert get(s.port)[0] == 200


def test_term_lets_slow_request_finish_and_exits_0(serve: Any) -> None:
    """TERM with a slow request in flight: it completes with 200, the master exits 0."""
    s = serve(APP, "--workers", "2")
    s.wait_ready(2)
    workers = [psutil.Process(p) for p in s.worker_pids()]
    result: list[Any] = []
    client = threading.Thread(target=lambda: result.append(get(s.port, "/slow?s=2")))
    client.start()
    wait_until(lambda: _in_flight(s), 10, "request in flight")
    s.signal(signal.SIGTERM)
    assert s.wait(30) == 0
    client.join(10)
    assert result and result[0][0] == 200
    _, alive = psutil.wait_procs(workers, timeout=5)
    assert alive == []


def _in_flight(s: Server) -> bool:
    """Whether some worker holds an established client connection."""
    for pid in s.worker_pids():
        try:
            conns = psutil.Process(pid).net_connections(kind="tcp")
        except psutil.Error:
            continue
        if any(c.status == psutil.CONN_ESTABLISHED for c in conns):
            return True
    return False


def test_master_sigkill_makes_workers_exit(serve: Any) -> None:
    """SIGKILL of the master: the workers notice (channel EOF) and exit by themselves."""
    s = serve(APP, "--workers", "2")
    s.wait_ready(2)
    workers = [psutil.Process(p) for p in s.worker_pids()]
    s.signal(signal.SIGKILL)
    s.wait(10)
    _, alive = psutil.wait_procs(workers, timeout=15)
    assert alive == []


def test_import_error_exits_3_without_looping(serve: Any, tmp_path: Path) -> None:
    """An app whose import raises: the master exits 3 after one attempt."""
    write_app(tmp_path / "versioned.py", "1", broken=True)
    s = serve("versioned:app", "--workers", "3", app_dir=tmp_path)
    assert s.wait(20) == 3
    log = s.log()
    assert log.count("Started worker") == 3  # all at once, one traceback shown
    assert log.count("RuntimeError: this version is broken") == 1
    assert log.count("Error while importing") == 1


def test_reload_flag_picks_up_an_edit(serve: Any, tmp_path: Path) -> None:
    """--reload watches the app dir and serves edited code."""
    write_app(tmp_path / "versioned.py", "1")
    s = serve(
        "versioned:app",
        "--reload",
        "--reload-dir",
        str(tmp_path),
        "--reload-delay",
        "0.1",
        app_dir=tmp_path,
    )
    s.wait_ready(1)
    assert get(s.port)[1].startswith("version=1")
    write_app(tmp_path / "versioned.py", "2")
    s.wait_log("Reload complete", timeout=20)
    # The old worker may take a connection until it reads its DRAIN; then only v2 answers.
    wait_until(lambda: get(s.port)[1].startswith("version=2"), 10, "edited code served")


def test_second_term_stops_at_once(serve: Any) -> None:
    """A second TERM during a graceful stop makes it immediate; the master still exits 0."""
    s = serve(APP, "--workers", "1", "--timeout-graceful-shutdown", "60")
    s.wait_ready(1)
    client = threading.Thread(
        target=lambda: _swallow(lambda: get(s.port, "/slow?s=60")), daemon=True
    )
    client.start()
    wait_until(lambda: _in_flight(s), 10, "request in flight")
    s.signal(signal.SIGTERM)
    s.wait_log("graceful stop")
    s.signal(signal.SIGTERM)
    assert s.wait(10) == 0
    assert "Second SIGTERM: stopping at once" in s.log()


def test_usr1_reopens_log_files_in_master_and_workers(serve: Any, tmp_path: Path) -> None:
    """USR1 after the log file was moved: master and workers write to a fresh file."""
    import json

    logfile = tmp_path / "corral.log"
    handler = {"class": "logging.FileHandler", "filename": str(logfile)}
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"file": handler},
        "loggers": {
            name: {"handlers": ["file"], "level": "INFO", "propagate": False}
            for name in ("corral.error", "corral.access")
        },
    }
    (tmp_path / "log.json").write_text(json.dumps(config))
    s = serve(APP, "--workers", "2", "--log-config", str(tmp_path / "log.json"), access_log=True)
    wait_until(lambda: logfile.exists() and logfile.read_text().count(") ready") == 2, 20)
    s.port = int(re.findall(r"127\.0\.0\.1:(\d+)", logfile.read_text())[0])
    logfile.rename(tmp_path / "corral.log.1")
    s.signal(signal.SIGUSR1)
    wait_until(lambda: logfile.exists() and "Reopened log files" in logfile.read_text(), 10)
    wait_until(lambda: _worker_wrote_fresh_log(s, logfile), 10, "workers reopened their logs")
    s.signal(signal.SIGTERM)
    assert s.wait(20) == 0
    assert logfile.read_text().count("Finished server process") == 2


def _worker_wrote_fresh_log(s: Server, logfile: Path) -> bool:
    get(s.port)  # an access line from whichever worker answers
    return '"GET / HTTP/1.1" 200' in logfile.read_text()


def test_stuck_worker_is_killed_after_drain_allowance_and_master_exits_0(serve: Any) -> None:
    """TERM while a worker's loop is blocked: SIGKILL after graceful + lifespan + margin."""
    s = serve(
        APP,
        "--workers",
        "1",
        "--timeout-graceful-shutdown",
        "0.5",
        "--timeout-lifespan-shutdown",
        "0.5",
        "--timeout-worker-healthcheck",
        "60",
    )
    s.wait_ready(1)
    stuck = s.worker_pids().pop()
    threading.Thread(
        target=lambda: _swallow(lambda: get(s.port, "/block?s=60")), daemon=True
    ).start()
    wait_until(lambda: _in_flight(s), 10, "request in flight")
    s.signal(signal.SIGTERM)
    assert s.wait(20) == 0
    log = s.log()
    assert f"Killing worker 1 (pid {stuck}): still running at its drain deadline" in log
    assert f"(pid {stuck}) killed by SIGKILL" in log


def test_preload_hup_with_broken_code_keeps_old_workers(serve: Any, tmp_path: Path) -> None:
    """--preload HUP with code that fails to import: the old workers keep serving."""
    write_app(tmp_path / "versioned.py", "1")
    s = serve("versioned:app", "--workers", "2", "--preload", app_dir=tmp_path)
    s.wait_ready(2)
    old = s.worker_pids()
    hammer = Hammer(s.port, clients=2)
    try:
        write_app(tmp_path / "versioned.py", "2", broken=True)
        s.signal(signal.SIGHUP)
        log = s.wait_log("keeps serving", timeout=30)
        assert get(s.port)[1].startswith("version=1")
        assert log.count("RuntimeError: this version is broken") == 1
    finally:
        hammer.stop()
    assert s.proc.poll() is None
    assert old <= s.worker_pids()
    assert hammer.failures == []


def test_ctrl_c_to_the_process_group_stops_gracefully(serve: Any) -> None:
    """SIGINT to the whole group (Ctrl+C): workers ignore it, the master drains them, exit 0."""
    s = serve(APP, "--workers", "2", start_new_session=True)
    s.wait_ready(2)
    os.killpg(s.pid, signal.SIGINT)
    assert s.wait(20) == 0
    log = s.log()
    assert log.count("exited cleanly") == 2
    assert "killed by SIGINT" not in log


def test_lifespan_startup_failure_exits_3_once(serve: Any, tmp_path: Path) -> None:
    """Lifespan startup failing in the first worker: exit 3, the message logged once."""
    (tmp_path / "lsfail.py").write_text(
        "async def app(scope, receive, send):\n"
        "    if scope['type'] == 'lifespan':\n"
        "        await receive()\n"
        "        await send({'type': 'lifespan.startup.failed', 'message': 'db unreachable'})\n"
    )
    s = serve("lsfail:app", "--workers", "2", app_dir=tmp_path)
    assert s.wait(20) == 3
    log = s.log()
    assert log.count("db unreachable") == 1
    assert log.count("Application startup failed") == 1
    assert log.count("Started worker") == 2


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGHUP, 1012), (signal.SIGTERM, 1001)])
def test_websocket_close_code_says_restart_or_going_away(serve: Any, sig: int, code: int) -> None:
    """Open WebSockets are closed with 1012 on a reload and 1001 on a stop."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    s = serve(APP, "--workers", "1", "--timeout-graceful-shutdown", "1")
    s.wait_ready(1)
    with connect(f"ws://127.0.0.1:{s.port}/ws", open_timeout=10) as ws:
        s.signal(sig)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=20)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == code


def test_memory_limit_counts_unique_memory_not_shared_preload_pages(
    serve: Any, tmp_path: Path
) -> None:
    """Under --preload, pages shared with the master don't count against the limit (USS)."""
    (tmp_path / "bigapp.py").write_text(
        "BIG = b'x' * (120 * 1024 * 1024)  # imported once in the master, shared by fork\n"
        "async def app(scope, receive, send):\n"
        "    pass\n"
    )
    s = serve(
        "bigapp:app",
        "--workers",
        "1",
        "--preload",
        "--limit-worker-memory",
        "60",
        "--lifespan",
        "off",
        "--log-level",
        "trace",
        app_dir=tmp_path,
    )
    s.wait_ready(1)
    worker = s.worker_pids().pop()
    log = s.wait_log(f"(pid {worker}) uses", count=3)
    assert psutil.Process(worker).memory_info().rss > 100 * 1024 * 1024  # RSS would trip it
    assert "over memory limit" not in log
    assert worker in s.worker_pids()


def test_preload_warns_about_threads_started_at_import(serve: Any, tmp_path: Path) -> None:
    """--preload with an app that starts a thread at import gets a warning before forking."""
    (tmp_path / "threaded.py").write_text(
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(60,), name='poller', daemon=True).start()\n"
        "async def app(scope, receive, send):\n"
        "    pass\n"
    )
    s = serve("threaded:app", "--workers", "1", "--preload", "--lifespan", "off", app_dir=tmp_path)
    s.wait_ready(1)
    assert "The app started 1 thread(s) at import (poller)" in s.log()


def test_initial_start_reaches_full_capacity_in_one_import_time(serve: Any, tmp_path: Path) -> None:
    """An app taking 2 s to import, --workers 3: every worker is forked before the first
    is READY, and all three serve well before two import times (boots are not serial)."""
    import time

    write_app(tmp_path / "versioned.py", "1", extra="import time; time.sleep(2.0)")
    began = time.monotonic()
    s = serve("versioned:app", "--workers", "3", app_dir=tmp_path)
    s.wait_ready(3, timeout=30)
    elapsed = time.monotonic() - began
    log = s.log()
    assert log.rindex("Started worker 3") < log.index(") ready"), log
    assert elapsed < 2 * 2.0 + 1.0, f"full capacity after {elapsed:.1f}s"
