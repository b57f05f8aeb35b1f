"""The phases of a WebSocket connection, the moves allowed between them, and the
error a forbidden move raises.

Kept apart from :mod:`corral.worker.websocket.connection` (as
:mod:`corral.worker.http1.connstate` is for HTTP) so the transition table reads on its own.
"""

from __future__ import annotations

import enum


class Phase(enum.Enum):
    """Where a WebSocket connection is in its life."""

    HANDSHAKE = "handshake"  # waiting for the app: accept, close or its own response
    RESPONDING = "responding"  # the app is sending a denial response
    OPEN = "open"
    CLOSING = "closing"  # a close frame was sent or received; TCP not closed yet
    CLOSED = "closed"


class InvalidTransition(RuntimeError):
    """A connection was asked to move between phases in a way the protocol forbids."""


ALLOWED: dict[Phase, frozenset[Phase]] = {
    Phase.HANDSHAKE: frozenset({Phase.OPEN, Phase.RESPONDING, Phase.CLOSED}),
    Phase.RESPONDING: frozenset({Phase.CLOSED}),
    Phase.OPEN: frozenset({Phase.CLOSING, Phase.CLOSED}),
    Phase.CLOSING: frozenset({Phase.CLOSED}),
    Phase.CLOSED: frozenset(),
}


def check_move(old: Phase, new: Phase) -> Phase:
    """Return ``new`` if a connection may go there from ``old``, else raise."""
    if new not in ALLOWED[old]:
        raise InvalidTransition(f"WebSocket cannot go from {old.name} to {new.name}")
    return new
