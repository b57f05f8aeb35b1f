"""The default per-line request limits: real traffic that uvicorn serves passes them.

Big cookies, bearer tokens, many proxy-added headers and long signed URLs are ordinary;
the whole-head limit (64 KiB) bounds memory, the per-line limits only stop absurd lines.
Each case is sent over a real socket with httpx, on every loop and parser.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from corral.config import Config

from tests.apps import Receive, Scope, Send, read_body, respond


async def head_summary(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers with the sizes of what arrived: path length, header count, longest value."""
    await read_body(receive)
    summary = {
        "path": len(scope["path"]) + len(scope["query_string"]),
        "fields": len(scope["headers"]),
        "longest": max(len(value) for _name, value in scope["headers"]),
    }
    await respond(send, json.dumps(summary).encode())


def _get(port: int, path: str = "/", headers: list[tuple[str, str]] | None = None) -> Any:
    return httpx.get(f"http://127.0.0.1:{port}{path}", headers=headers, timeout=10.0)


def test_defaults() -> None:
    """16 KiB request line, 32 KiB per field, 200 fields; 64 KiB for the whole head."""
    config = Config()
    assert config.limit_request_line == 16384
    assert config.limit_request_field_size == 32768
    assert config.limit_request_fields == 200
    assert config.limit_request_header_size == 65536


@pytest.mark.parametrize(
    ("case", "path", "headers", "key", "at_least"),
    [
        ("10 KB cookie", "/", [("cookie", "session=" + "c" * 10_000)], "longest", 10_000),
        ("9 KB token", "/", [("authorization", "Bearer " + "t" * 9_000)], "longest", 9_000),
        ("120 headers", "/", [(f"x-hop-{i}", "1") for i in range(120)], "fields", 120),
        ("9 KB URL", "/signed?sig=" + "u" * 9_000, [], "path", 9_000),
    ],
)
def test_real_traffic_passes_default_limits(
    http_server: Any,
    case: str,
    path: str,
    headers: list[tuple[str, str]],
    key: str,
    at_least: int,
) -> None:
    server = http_server(head_summary)
    response = _get(server.port, path, headers)
    assert response.status_code == 200, case
    assert response.json()[key] >= at_least


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/" + "u" * 16_400, [], 414),
        ("/", [("cookie", "c" * 32_800)], 431),
        ("/", [(f"x-hop-{i}", "1") for i in range(201)], 431),
        ("/", [(f"x-big-{i}", "b" * 20_000) for i in range(4)], 431),  # 80 KB head
    ],
    ids=["line", "field", "count", "head"],
)
def test_past_the_defaults_is_refused(
    http_server: Any, path: str, headers: list[tuple[str, str]], status: int
) -> None:
    server = http_server(head_summary)
    assert _get(server.port, path, headers).status_code == status
