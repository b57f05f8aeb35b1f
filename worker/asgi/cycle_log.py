"""What a request cycle writes to the logs: access lines and warnings about app mistakes.

Kept apart from :mod:`corral.worker.asgi.cycle` so the ``receive()``/``send()`` code reads on its
own. Everything here builds its text only when a line is actually written.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from corral.worker.http1.writer import status_text

if TYPE_CHECKING:
    from corral.worker.asgi.cycle import CycleOwner

logger = logging.getLogger("corral.error")
access_logger = logging.getLogger("corral.access")

_warned: set[str] = set()


def warn_once(key: str, message: str, *args: object) -> None:
    """Log an app mistake once per process: a busy app repeating it must not flood logs."""
    if key not in _warned:
        _warned.add(key)
        logger.warning(message, *args)


def request_target(scope: dict[str, Any]) -> str:
    """The request's path and query as the client sent them, for log lines."""
    path: str = scope["raw_path"].decode("latin-1")
    if scope["query_string"]:
        path += "?" + scope["query_string"].decode("latin-1")
    return path


def log_access(scope: dict[str, Any], conn: CycleOwner, status: int) -> None:
    """The access line for a response (or corral's answer in its place)."""
    client = scope["client"]
    if client is conn.client:
        client_text = conn.client_text
    else:  # rewritten from proxy headers
        client_text = f"{client[0]}:{client[1]}" if client else ""
    access_logger.info(
        '%s - "%s %s HTTP/%s" %s',
        client_text,
        scope["method"],
        request_target(scope),
        scope["http_version"],
        status_text(status),
    )


def refused_response(scope: dict[str, Any], problem: Exception) -> None:
    logger.error(
        "Refused the app's response for %s: %s; sent 500 instead",
        request_target(scope),
        problem,
    )


def dropped_body(scope: dict[str, Any], status: int) -> None:
    warn_once(
        "dropped",
        "The app sent a body with a response that can't have one (%s %s); it was dropped."
        " (Logged once.)",
        scope["method"],
        status,
    )


def body_overflow(scope: dict[str, Any]) -> None:
    logger.warning(
        "Response body for %s is longer than its Content-Length; the excess was cut and"
        " the connection will close.",
        request_target(scope),
    )


def body_short(scope: dict[str, Any], missing: int) -> None:
    logger.warning(
        "Response body for %s is shorter than its Content-Length (%d bytes"
        " missing); closing the connection.",
        request_target(scope),
        missing,
    )
