"""Out of file descriptors: the limit is raised at startup, a low one is warned about, and
EMFILE is logged with accepting paused, never connections dropped in silence."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from corral.fdlimit import RESERVE, low_limit_warning, needed, raise_soft_limit

from tests.conftest import DEADLINE
from tests.test_cli_e2e import BANNER, E2E_APP, Running, write_app

#: Descriptors the server process may open: about 15 at startup, so a few connections fit.
LOW_LIMIT = 32
CLIENTS = 40


def settings(limit_concurrency: int | None = None, backlog: int = 2048) -> SimpleNamespace:
    return SimpleNamespace(limit_concurrency=limit_concurrency, backlog=backlog)


def test_needed_counts_served_and_waiting_connections() -> None:
    assert needed(settings(limit_concurrency=500)) == 1000 + RESERVE  # type: ignore[arg-type]
    assert needed(settings(backlog=100)) == 100 + RESERVE  # type: ignore[arg-type]


def test_warning_names_the_limit_and_the_setting() -> None:
    config = settings(limit_concurrency=500)
    warning = low_limit_warning(config, 256, 256)  # type: ignore[arg-type]
    assert warning is not None
    assert "open file limit is 256 (hard limit 256)" in warning
    assert "--limit-concurrency 500 needs about 1064" in warning
    assert low_limit_warning(config, 1064, 4096) is None  # type: ignore[arg-type]
    unlimited = resource.RLIM_INFINITY
    assert low_limit_warning(config, unlimited, unlimited) is None  # type: ignore[arg-type]


def in_child(soft: int, hard: int, code: str) -> str:
    """Run ``code`` in a Python whose RLIMIT_NOFILE starts at (soft, hard); its stdout."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    done = subprocess.run(
        [sys.executable, "-c", code],
        preexec_fn=limit,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=True,
    )
    return done.stdout.strip()


def test_soft_limit_is_raised_to_the_hard_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    top = min(hard, 4096) if hard != resource.RLIM_INFINITY else 4096
    code = (
        "import resource; from corral.fdlimit import raise_soft_limit;"
        "print(raise_soft_limit(), resource.getrlimit(resource.RLIMIT_NOFILE))"
    )
    assert in_child(256, top, code) == f"({top}, {top}) ({top}, {top})"


def test_raising_is_a_no_op_at_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert raise_soft_limit((hard, hard)) == (hard, hard)
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)


@pytest.fixture
def low_limit_server(tmp_path: Path) -> Iterator[Running]:
    """corral in one process whose soft and hard limits are both LOW_LIMIT."""
    write_app(tmp_path, E2E_APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (LOW_LIMIT, LOW_LIMIT))

    proc = subprocess.Popen(
        [sys.executable, "-m", "corral", "main:app", "--port", "0", "--backlog", "128"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limit,
    )
    try:
        yield Running(proc)
    finally:
        proc.kill()
        proc.wait()


def test_out_of_descriptors_is_logged_and_no_connection_is_dropped(
    low_limit_server: Running,
) -> None:
    """More silent clients than descriptors: the single process logs EMFILE and pauses
    accepting; the clients it could not take wait in the backlog and are all served once
    descriptors free up (libuv's own accept path closed them without a word)."""
    server = low_limit_server
    server.wait_for("open file limit is 32 \\(hard limit 32\\)")
    port = int(server.wait_for(BANNER).group(1))
    clients = [
        socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) for _ in range(CLIENTS)
    ]
    try:
        server.wait_for("Out of resources accepting connections .*Too many open files.*; pausing")
        for client in clients:
            client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        answers = []
        for client in clients:
            data = b""
            while chunk := client.recv(65536):
                data += chunk
            answers.append(data.split(b"\r\n", 1)[0])
    finally:
        for client in clients:
            client.close()
    assert answers == [b"HTTP/1.1 200 OK"] * CLIENTS
