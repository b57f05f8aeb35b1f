"""The wire corpus (tests/wire_corpus.py) over real sockets, on both parsers and both loops.

For every case the raw request is sent with a pipelined follow-up behind it. A refused
request must get its status with ``Connection: close``, then EOF: the follow-up is never
answered. A served request must reach the app exactly as the case says, and its follow-up
is answered exactly when the connection stays open.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from tests.apps import respond
from tests.conftest import STACKS, RawClient, Running, start_server
from tests.wire_corpus import CASES, FOLLOW_UP, WireCase


async def reporting_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with JSON describing the request as the app saw it."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return  # the request was refused mid-body: nothing to answer
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    seen = {
        "method": scope["method"],
        "path": scope["path"],
        "raw_path": scope["raw_path"].decode("latin-1"),
        "query": scope["query_string"].decode("latin-1"),
        "http_version": scope["http_version"],
        "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]],
        "body": body.decode("latin-1"),
    }
    await respond(send, json.dumps(seen).encode(), headers=[(b"content-type", b"application/json")])


def _config_key(case: WireCase) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(case.config.items()))


@pytest.fixture(scope="module", params=STACKS, ids=["-".join(s) for s in STACKS])
def servers(request: pytest.FixtureRequest) -> Iterator[dict[Any, Running]]:
    """One server per distinct config in the corpus, for one (loop, parser) stack."""
    loop_kind, http_kind = request.param
    running: dict[Any, Running] = {}
    try:
        for case in CASES:
            key = _config_key(case)
            if key not in running:
                running[key] = start_server(
                    reporting_app, loop_kind, http_kind, log_level="warning", **case.config
                )
        yield running
    finally:
        for server in running.values():
            server.stop()


def _check_seen(case: WireCase, seen: dict[str, Any]) -> None:
    expected = case.seen
    for key in ("method", "path"):
        if key in expected:
            assert seen[key] == expected[key], case.id
    if "raw_path" in expected:
        assert seen["raw_path"].encode("latin-1") == expected["raw_path"], case.id
    if "query" in expected:
        assert seen["query"].encode("latin-1") == expected["query"], case.id
    assert seen["body"].encode("latin-1") == expected.get("body", b""), case.id
    headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in seen["headers"]]
    for name, value in expected.get("headers", {}).items():
        assert [v for n, v in headers if n == name] == [value], case.id


@pytest.mark.parametrize("case", CASES, ids=[f"{c.id}" for c in CASES])
def test_wire_case(
    case: WireCase, servers: dict[Any, Running], caplog: pytest.LogCaptureFixture
) -> None:
    """A corpus request gets its RFC-correct answer; a smuggled follow-up never does."""
    server = servers[_config_key(case)]
    parser = server.server.config.http
    status = case.status_for(parser)
    with caplog.at_level(logging.WARNING), RawClient(server.port) as client:
        client.send(case.raw + FOLLOW_UP)
        response = client.read_response()
        assert response.status == status, f"{case.id} ({case.rfc}): {response.body[:200]!r}"
        if status < 400:
            _check_seen(case, json.loads(response.body))
        if case.closes_for(parser):
            if status >= 400:
                assert response.header("connection") == "close", case.id
            assert client.is_closed(), f"{case.id}: the follow-up was answered"
        else:
            follow_up = client.read_response()
            assert follow_up.status == 200
            assert json.loads(follow_up.body)["path"] == "/smuggled"
    assert not any(r.exc_info for r in caplog.records), "a traceback was logged"
