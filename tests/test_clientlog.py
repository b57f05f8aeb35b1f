"""Client-caused log lines are rate-limited per kind: the limiter with a fake clock, the
shell's lines, and a real server flooded with bad requests and slow heads."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from corral.worker.clientlog import BURST, WINDOW, Kind, RateLimiter, Summary, _ClientLog

from tests.apps import hello
from tests.conftest import RawClient, Running, wait_for


def test_first_burst_written_then_counted() -> None:
    limiter = RateLimiter()
    verdicts = [limiter.admit(Kind.HEAD_TIMEOUT, 100.0 + i * 0.01) for i in range(BURST + 5)]
    assert [write for write, _ in verdicts] == [True] * BURST + [False] * 5
    assert all(summary is None for _, summary in verdicts)


def test_next_line_after_the_window_brings_the_summary_and_a_fresh_burst() -> None:
    limiter = RateLimiter()
    for i in range(5_006):
        limiter.admit(Kind.HEAD_TIMEOUT, 100.0 + i * 0.001)
    write, summary = limiter.admit(Kind.HEAD_TIMEOUT, 100.0 + WINDOW)
    assert write
    assert summary == Summary(Kind.HEAD_TIMEOUT, 4_996, WINDOW)
    assert summary.text() == "... and 4,996 more 408s for slow request heads in the last 60 s"
    assert all(limiter.admit(Kind.HEAD_TIMEOUT, 161.0)[0] for _ in range(BURST - 1))
    assert limiter.admit(Kind.HEAD_TIMEOUT, 161.0) == (False, None)


def test_no_summary_when_nothing_was_left_out() -> None:
    limiter = RateLimiter()
    for _ in range(BURST):
        limiter.admit(Kind.BAD_REQUEST, 0.0)
    assert limiter.next_due() is None  # nothing to summarise: no timer needed
    assert limiter.admit(Kind.BAD_REQUEST, WINDOW + 1) == (True, None)
    assert limiter.due(1_000.0) == []


def test_kinds_have_separate_budgets() -> None:
    limiter = RateLimiter()
    for _ in range(BURST + 3):
        limiter.admit(Kind.BAD_REQUEST, 0.0)
    assert limiter.admit(Kind.PROXY_REFUSED, 1.0) == (True, None)
    assert limiter.next_due() == WINDOW
    assert limiter.due(WINDOW - 0.001) == []
    assert limiter.due(WINDOW) == [Summary(Kind.BAD_REQUEST, 3, WINDOW)]
    assert limiter.due(WINDOW) == []  # written once


def test_stopping_flushes_every_window_over_the_time_it_lasted() -> None:
    limiter = RateLimiter()
    for _ in range(BURST + 7):
        limiter.admit(Kind.OVER_CONCURRENCY, 10.0)
    (summary,) = limiter.due(33.0, every=True)
    assert summary.text() == (
        "... and 7 more 503s for exceeding the concurrency limit in the last 23 s"
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_shell_writes_burst_then_summary_at_the_kinds_level(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    log = _ClientLog(clock)
    caplog.set_level(logging.INFO, logger="corral.error")
    for i in range(3_000):
        log(Kind.PROXY_REFUSED, logging.WARNING, "Refused connection from %s: %s", f"c{i}", "bad")
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert lines == [(logging.WARNING, f"Refused connection from c{i}: bad") for i in range(BURST)]
    caplog.clear()
    clock.now += WINDOW
    log.flush()
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "... and 2,990 more refused PROXY headers in the last 60 s")
    ]


def test_shell_counts_nothing_its_logger_would_drop(caplog: pytest.LogCaptureFixture) -> None:
    log = _ClientLog(FakeClock())
    caplog.set_level(logging.WARNING, logger="corral.error")
    for _ in range(50):
        log(Kind.HEAD_TIMEOUT, logging.INFO, "Request head from %s not complete", "c")
    assert log.limiter.next_due() is None and not caplog.records


def messages(caplog: pytest.LogCaptureFixture, needle: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if needle in r.getMessage()]


def test_server_flooded_with_bad_requests_writes_a_burst(
    http_server: Callable[..., Running], caplog: pytest.LogCaptureFixture
) -> None:
    """40 bad requests: 10 warnings word for word, then the summary when the server stops."""
    running = http_server(hello)
    caplog.set_level(logging.INFO, logger="corral.error")
    for _ in range(40):
        with RawClient(running.port) as client:
            client.send(b"GET / HTTP/1.1\r\n\r\n")  # no Host
            assert client.read_response().status == 400
    wait_for(lambda: not running.connections, message="the bad connections to close")
    warned = messages(caplog, "Invalid HTTP request received")
    assert len(warned) == BURST
    assert all(line.startswith("Invalid HTTP request received (400 ") for line in warned)
    running.stop()
    (summary,) = messages(caplog, "more invalid HTTP requests")
    assert summary.startswith("... and 30 more invalid HTTP requests in the last ")


def test_slowloris_408s_are_rate_limited(
    http_server: Callable[..., Running], caplog: pytest.LogCaptureFixture
) -> None:
    running = http_server(hello, timeout_request_header=0.2)
    caplog.set_level(logging.INFO, logger="corral.error")
    clients = [RawClient(running.port) for _ in range(25)]
    try:
        for client in clients:
            client.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        for client in clients:
            assert client.read_response().status == 408
    finally:
        for client in clients:
            client.close()
    assert len(messages(caplog, "not complete within")) == BURST
    running.stop()
    (summary,) = messages(caplog, "more 408s")
    assert summary.startswith("... and 15 more 408s for slow request heads in the last ")
