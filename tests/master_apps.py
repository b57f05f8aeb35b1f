"""Apps and fake workers for the master's integration tests.

Two kinds of helpers live here:

- ASGI apps served by real corral workers (``corral tests.master_apps:app --workers N``):
  ``/`` answers with the worker's pid and the app's VERSION; ``/exit`` kills its worker;
  ``/block?s=N`` blocks the worker's event loop; ``/grow?mib=N`` keeps N MiB alive;
  ``/slow?s=N`` answers after N seconds without blocking the loop.
- A scenario runner (``python -m tests.master_apps SCENARIO WORKERS [SETTING=VALUE ...]``)
  that runs the real Master with fake worker entries speaking the channel protocol, so the
  supervision machinery is exercised with real fork and signals but without HTTP.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import socket
import sys
import time
from typing import Any

from tests.apps import serve_lifespan

VERSION = os.environ.get("MASTER_APPS_VERSION", "1")
_hoard: list[bytearray] = []


async def _body(receive: Any) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            return


async def _respond(send: Any, status: int, text: str, headers: list[Any] | None = None) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain"), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _query(scope: dict[str, Any]) -> dict[str, str]:
    raw = scope.get("query_string", b"").decode()
    return dict(part.split("=", 1) for part in raw.split("&") if "=" in part)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The test app; see the module docstring for its paths."""
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass
        return
    if scope["type"] != "http":
        return
    await _body(receive)
    path = scope["path"]
    query = _query(scope)
    if path == "/exit":
        os._exit(7)
    elif path == "/block":
        time.sleep(float(query.get("s", "60")))
    elif path == "/grow":
        _hoard.append(bytearray(os.urandom(1024)) * (int(query.get("mib", "10")) * 1024))
    elif path == "/slow":
        await asyncio.sleep(float(query.get("s", "1")))
    await _respond(send, 200, f"pid={os.getpid()} version={VERSION}")


# --- fake workers for the scenario runner ------------------------------------------------


def _fake_worker(sock: socket.socket, slot: int, generation: int, mode: str) -> int:
    """Speak the channel protocol like a real worker, misbehaving as ``mode`` says."""
    from corral.worker import channel

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock.sendall(channel.booting(os.getpid()))
    fail_file = os.environ.get("FAKE_FAIL_FILE", "")
    if mode == "fail" or (fail_file and os.path.exists(fail_file)):
        sock.sendall(channel.fatal(3))
        return 3
    if mode == "slowboot":
        time.sleep(3600)  # never READY: the boot timeout must catch it
    sock.sendall(channel.ready())
    interval = channel.beat_interval(float(os.environ.get("FAKE_HEALTHCHECK", "1")))
    beats = 0
    while True:
        if mode == "hang" and slot == 1 and generation == 1 and beats >= 2:
            time.sleep(3600)  # a blocked loop: no more beats
        if mode == "crash":
            return 1  # dies right after READY, before serving 1 s: a crash loop
        sock.sendall(channel.beat(beats))
        beats += 1
        readable, _, _ = select.select([sock], [], [], interval)
        if readable:
            data = sock.recv(256)
            if not data or data.startswith(b"DRAIN"):
                return 0


def main(argv: list[str]) -> int:
    """Run the real Master with fake workers: SCENARIO WORKERS [SETTING=VALUE ...].

    Scenarios: ``ok``; ``fail`` (every worker fails to boot); ``hang`` (worker 1 of the
    first generation stops beating); ``slowboot`` (never READY); ``crash`` (exits soon
    after READY); any scenario also fails boots while the file named by
    ``FAKE_FAIL_FILE`` exists.
    """
    from corral.config import Config
    from corral.logging import configure_logging
    from corral.supervisor.master import Master
    from corral.supervisor.pool import adopted_workers

    mode, workers, *settings = argv
    values: dict[str, Any] = {}
    for item in settings:
        key, _, raw = item.partition("=")
        values[key] = raw == "1" if key == "preload" else float(raw)
    config = Config(app="tests.master_apps:app", workers=int(workers), **values)
    configure_logging(config)
    os.environ["FAKE_HEALTHCHECK"] = str(config.timeout_worker_healthcheck)

    def entry(sock: socket.socket, slot: int, generation: int) -> int:
        return _fake_worker(sock, slot, generation, mode)

    master = Master(config, [], entry)
    master.adopt(adopted_workers(time.monotonic()))
    return int(master.run())


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))


# --- harness used by the tests -----------------------------------------------------------


class Running:
    """A process under test whose stderr goes to a file the test polls."""

    def __init__(self, args: list[str], log_path: str, **kw: Any) -> None:
        import subprocess

        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 (closed in stop())
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **kw.pop("env", {})}
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=self._log, env=env, **kw
        )
        self.pid = self.proc.pid

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def wait_log(self, text: str, timeout: float = 15.0, count: int = 1) -> str:
        """Wait until ``text`` appears ``count`` times in the log; returns the log."""
        wait_until(lambda: self.log().count(text) >= count, timeout, f"{text!r} in log")
        return self.log()

    def children(self) -> list[int]:
        """Pids of the process's live children (zombies excluded)."""
        import psutil

        out = []
        for child in psutil.Process(self.pid).children():
            try:
                if child.status() != psutil.STATUS_ZOMBIE:
                    out.append(child.pid)
            except psutil.NoSuchProcess:
                continue
        return out

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """Make sure nothing is left behind: the process and its children."""
        import psutil

        try:
            kids = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            kids = []
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for kid in kids:
            try:
                kid.kill()
            except psutil.NoSuchProcess:
                pass
        self._log.close()


def wait_until(predicate: Any, timeout: float, what: str = "condition") -> None:
    """Poll ``predicate`` until true or ``timeout`` seconds pass (then AssertionError)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def title(pid: int) -> str:
    """A process's title as ps shows it (setproctitle rewrites the command line)."""
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        return handle.read().replace(b"\0", b" ").decode(errors="replace").strip()


#: A tiny app written into a test's tmp dir, so tests can change its code between reloads.
VERSIONED_APP = """\
import os

VERSION = {version!r}
{extra}

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({{"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]}})
    await send({{"type": "http.response.body",
                "body": f"version={{VERSION}} pid={{os.getpid()}}".encode()}})
"""


def write_app(path: Any, version: str, broken: bool = False, extra: str = "") -> None:
    """Write the versioned app module; ``broken`` makes its import raise, ``extra`` is
    more code run at import."""
    if broken:
        extra = 'raise RuntimeError("this version is broken")'
    text = VERSIONED_APP.format(version=version, extra=extra)
    try:
        previous = os.stat(path).st_mtime_ns
    except FileNotFoundError:
        previous = None
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)  # atomic: a worker importing meanwhile sees old or new, never half
    stamp = os.stat(path)
    if previous is not None:
        # A .pyc records its source's mtime in whole seconds (and its size, which versions
        # share), so a rewrite within the same second would import the stale bytecode. Move
        # the new mtime into a later whole second than the previous one.
        second = 1_000_000_000
        mtime = max(stamp.st_mtime_ns, (previous // second + 1) * second)
        os.utime(path, ns=(stamp.st_atime_ns, mtime))


def get(port: int, path: str = "/", timeout: float = 10.0) -> tuple[int, str]:
    """One request on a fresh connection: (status, body)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


class Hammer:
    """Client threads sending requests on fresh connections until stopped (bounded)."""

    def __init__(
        self, port: int, clients: int = 4, limit: int = 20000, keep_alive: bool = False
    ) -> None:
        import threading

        self.keep_alive = keep_alive  # reuse connections (an httpx pool per client)
        self.port = port
        self.limit = limit
        self.ok = 0
        self.failures: list[str] = []
        self.bodies: set[str] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        import httpx

        pool = httpx.Client(timeout=10) if self.keep_alive else None
        while not self._stop.is_set() and self.ok + len(self.failures) < self.limit:
            try:
                if pool is None:
                    status, body = get(self.port)
                else:
                    response = pool.get(f"http://127.0.0.1:{self.port}/")
                    status, body = response.status_code, response.text
            except Exception as exc:
                with self._lock:
                    self.failures.append(repr(exc))
                continue
            with self._lock:
                if status == 200:
                    self.ok += 1
                    self.bodies.add(body.split(" pid=")[0])
                else:
                    self.failures.append(f"status {status}")

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)
