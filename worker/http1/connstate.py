"""The states of an HTTP/1.1 connection's reading side, and which changes are allowed.

Kept apart from :mod:`corral.worker.http1.protocol` so the transition table reads on its own. The
protocol checks hot transitions inline (identity tests, no hashing); rarer ones go through
:func:`check_transition`.
"""

from __future__ import annotations

from enum import Enum


class ConnState(Enum):
    """Where the connection's reading side stands."""

    IDLE = "idle"  # between requests: no byte of the next request head yet
    HEAD = "head"  # part of a request head has arrived
    BODY = "body"  # a head was parsed and its body is still arriving
    FINISHED = "finished"  # no further request will be read (close asked, bad framing, drain)
    UPGRADED = "upgraded"  # a WebSocket upgrade was parsed; the connection changes hands
    CLOSED = "closed"  # reachable from every state


class InvalidTransition(RuntimeError):
    """A connection state change that the protocol does not allow (a corral bug)."""


ALLOWED: dict[ConnState, frozenset[ConnState]] = {
    # IDLE -> BODY: a pipelined head parsed in the same read as the previous request's end.
    ConnState.IDLE: frozenset(
        {ConnState.HEAD, ConnState.BODY, ConnState.FINISHED, ConnState.UPGRADED}
    ),
    ConnState.HEAD: frozenset({ConnState.BODY, ConnState.FINISHED, ConnState.UPGRADED}),
    ConnState.BODY: frozenset({ConnState.IDLE, ConnState.FINISHED}),
    ConnState.FINISHED: frozenset(),
    ConnState.UPGRADED: frozenset(),
    ConnState.CLOSED: frozenset(),
}


def check_transition(old: ConnState, new: ConnState) -> ConnState:
    """Return ``new`` if the protocol may go there from ``old``, else raise."""
    if new is not ConnState.CLOSED and new not in ALLOWED[old]:
        raise InvalidTransition(f"HTTP connection: {old.value} -> {new.value}")
    return new
