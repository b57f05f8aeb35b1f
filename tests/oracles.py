"""Independent HTTP/1.1 request parsers (h11 and httptools) as oracles for corral's reader.

corral parses every head and frames every body itself. The differential fuzz tests feed
the same bytes to h11 and to llhttp (through httptools), each driven on its own with no
help from corral, and compare what each made of the requests corral accepted: the
method, the target and the body of every message, in order. Those are what a request
smuggling bug would change.
"""

from __future__ import annotations

from typing import Any

import h11
import httptools

#: (method, target, body) of one complete request.
Request = tuple[str, bytes, bytes]


def h11_requests(data: bytes) -> tuple[list[Request], bool]:
    """The requests h11 reads from ``data``; True if it refused one.

    h11 refuses the empty lines a client may send before a request line, which RFC 9112
    §2.2 says a server should skip; the driver skips them, as corral does, by starting a
    fresh h11 connection on what follows each request.
    """
    done: list[Request] = []
    while True:
        while data.startswith(b"\r\n"):
            data = data[2:]
        if not data:
            return done, False
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=65536)
        conn.receive_data(data)
        current: list[Any] | None = None
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    return done, False
                if isinstance(event, h11.Request):
                    current = [event.method.decode("ascii"), bytes(event.target), b""]
                elif isinstance(event, h11.Data) and current is not None:
                    current[2] += bytes(event.data)
                elif isinstance(event, h11.EndOfMessage) and current is not None:
                    done.append((current[0], current[1], current[2]))
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    return done, False
        except h11.RemoteProtocolError:
            return done, True
        conn.send(h11.Response(status_code=200, headers=[("content-length", "0")]))
        conn.send(h11.EndOfMessage())
        if conn.our_state is h11.MUST_CLOSE:
            return done, False
        data = conn.trailing_data[0]


class _Llhttp:
    """httptools callbacks that collect whole requests."""

    def __init__(self) -> None:
        self.done: list[Request] = []
        self.target = b""
        self.body = b""
        self.parser: Any = None

    def on_message_begin(self) -> None:
        self.target = b""
        self.body = b""

    def on_url(self, url: bytes) -> None:
        self.target += url

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode("ascii")
        self.done.append((method, self.target, self.body))


def llhttp_requests(data: bytes) -> tuple[list[Request], bool]:
    """The requests llhttp reads from ``data``; True if it refused (an upgrade stops it)."""
    sink = _Llhttp()
    sink.parser = parser = httptools.HttpRequestParser(sink)
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        return sink.done, False
    except httptools.HttpParserError:
        return sink.done, True
    return sink.done, False
