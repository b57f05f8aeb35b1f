"""Seeded mutation fuzzing of the request parsers.

Valid requests are mutated (byte flips, inserted delimiters and framing headers, deleted,
duplicated or truncated lines) with a seeded RNG; the seed is printed so any failure can
be replayed with ``CORRAL_FUZZ_SEED=<seed>``. The default run uses a fixed seed;
``CORRAL_LONG=1`` runs the long mode, with many more inputs from a fresh random seed.

* ``test_reader_agrees_with_oracles``: sans-I/O differential fuzzing. corral's reader is
  the parser of record; h11 and llhttp (tests/oracles.py), each run on its own over the same
  bytes, must read every request corral accepted the same way (method, target, body), and
  corral must raise nothing but ParseError. corral may refuse more than they do.
* ``test_fuzz_server``: the mutated requests go through the full server over real sockets.
"""

from __future__ import annotations

import asyncio
import random
import re
from typing import Any

import pytest
from corral.worker.http1.parsers import ParseError, ParserLimits, RequestHead, RequestReader

from tests.conftest import STACKS, start_server
from tests.fuzzing import LONG, fuzz_seed, run_campaign
from tests.oracles import Request, h11_requests, llhttp_requests
from tests.test_parsers import RecordingSink, messages

SANS_IO_COUNT = 100_000 if LONG else 4_000

BASES = [
    b"GET /p/a?x=1&y=%20 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n",
    b"POST /upload HTTP/1.1\r\nHost: h:8080\r\nContent-Length: 11\r\n"
    b"Content-Type: text/plain\r\n\r\nhello world",
    b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;e=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"GET http://example.com/abs?q HTTP/1.1\r\nHost: other\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
    b"PUT /x HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"DELETE /r HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
]

#: Bytes and fragments that matter to HTTP/1.1 framing.
TOKENS = [
    b"\x00",
    b"\r",
    b"\n",
    b"\r\n",
    b" ",
    b"\t",
    b":",
    b",",
    b";",
    b"=",
    b'"',
    b"0",
    b"-",
    b"+",
    b"x",
    b"F",
    b"\xff",
    b"\x7f",
    b"/",
    b"?",
    b"#",
    b"*",
    b"HTTP/1.1",
    b"HTTP/2.0",
    b"\r\n\r\n",
    b"Host: y\r\n",
    b"Content-Length: 5\r\n",
    b"Content-Length: 0\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"Connection: close\r\n",
    b" folded\r\n",
    b"0\r\n\r\n",
    b"ffffffffffffffffff\r\n",
    b"GET / HTTP/1.1\r\nHost: z\r\n\r\n",
]


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One to four random mutations of ``data``."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        pos = rng.randrange(len(out) + 1)
        if op == 0 and out:
            out[min(pos, len(out) - 1)] = rng.randrange(256)
        elif op == 1:
            out[pos:pos] = rng.choice(TOKENS)
        elif op == 2 and out:
            del out[pos : pos + rng.randint(1, 8)]
        elif op == 3:
            lines = bytes(out).split(b"\r\n")
            i = rng.randrange(len(lines))
            lines.insert(i, lines[i])
            out = bytearray(b"\r\n".join(lines))
        elif op == 4:
            lines = bytes(out).split(b"\r\n")
            if len(lines) > 2:
                del lines[rng.randrange(1, len(lines) - 1)]
            out = bytearray(b"\r\n".join(lines))
        elif op == 5:
            out = out[: rng.randrange(len(out) + 1)]
        elif op == 6 and out:
            span = out[pos : pos + 6]
            out[pos : pos + 6] = span.swapcase()
        else:
            digits = [i for i, b in enumerate(out) if 0x30 <= b <= 0x39]
            if digits:
                i = rng.choice(digits)
                out[i : i + 1] = str(rng.choice([0, 1, 9, 10, 99, 2**64, -1])).encode()
    return bytes(out)


Shape = list[tuple[tuple[object, ...], bytes, bool]]
Outcome = tuple[int | None, Shape]


def outcome(data: bytes, step: int) -> Outcome:
    """What the reader made of ``data``: the error status, and the messages seen."""
    sink = RecordingSink()
    parser = RequestReader(sink, ParserLimits(body=1000))
    status = None
    try:
        for i in range(0, len(data), step):
            parser.feed(data[i : i + step])
    except ParseError as exc:
        status = exc.status
    shape = [(_head_tuple(m.head), m.body, m.complete) for m in messages(sink.events)]
    return status, shape


def _head_tuple(head: RequestHead) -> tuple[object, ...]:
    return (
        head.method,
        head.raw_path,
        head.query_string,
        head.http_version,
        head.headers,
        head.keep_alive,
        head.expect_continue,
        head.upgrade,
        head.content_length,
        head.chunked,
    )


def _same(mine: tuple[object, ...], body: bytes, theirs: Request) -> bool:
    """corral's request and an oracle's agree on method, target and body."""
    method, raw_path, query = mine[0], mine[1], mine[2]
    target = theirs[1]
    if target[:1] == b"/":  # origin-form: corral splits it; absolute-form it rewrites
        path, _, their_query = target.partition(b"?")
        if (path, their_query) != (raw_path, query):
            return False
    return (method, body) == (theirs[0], theirs[2])


#: Where corral reads a request an oracle refuses, on purpose (each is in the wire corpus):
_GAPS = {
    # h11 caps a chunk-size line at 20 hex digits; corral counts significant digits only.
    "h11": re.compile(rb"(?m)^0[0-9A-Fa-f]{19,}"),
    # llhttp knows a fixed list of methods, and refuses whitespace in chunk extensions.
    "llhttp": re.compile(rb"(?m)^[0-9A-Fa-f]+[ \t]*;[^\r\n]*[ \t]|^[0-9A-Fa-f]+[ \t]+;"),
}


def _oracle_gap(name: str, data: bytes, method: object) -> bool:
    if name == "llhttp" and method not in _LLHTTP_METHODS:
        return True
    return _GAPS[name].search(data) is not None


_LLHTTP_METHODS = frozenset(
    [
        "DELETE",
        "GET",
        "HEAD",
        "POST",
        "PUT",
        "OPTIONS",
        "TRACE",
        "COPY",
        "LOCK",
        "MKCOL",
        "MOVE",
        "PROPFIND",
        "PROPPATCH",
        "SEARCH",
        "UNLOCK",
        "BIND",
        "REBIND",
        "UNBIND",
        "ACL",
        "REPORT",
        "MKACTIVITY",
        "CHECKOUT",
        "MERGE",
        "M-SEARCH",
        "NOTIFY",
        "SUBSCRIBE",
        "UNSUBSCRIBE",
        "PATCH",
        "PURGE",
        "MKCALENDAR",
        "LINK",
        "UNLINK",
        "SOURCE",
        "QUERY",
    ]
)


@pytest.mark.timeout(3600 if LONG else 120)
def test_reader_agrees_with_oracles() -> None:
    """h11 and llhttp read every request corral accepts from mutated input the same way."""
    seed = fuzz_seed()
    print(f"fuzz seed (sans-I/O): {seed}, {SANS_IO_COUNT} inputs")
    rng = random.Random(seed)
    oracles = (("h11", h11_requests), ("llhttp", llhttp_requests))
    for n in range(SANS_IO_COUNT):
        base = rng.choice(BASES)
        data = mutate(rng, base) + rng.choice([b"", BASES[0]])
        step = rng.choice([len(data) or 1, 1, 5])
        _, shape = outcome(data, step)
        mine = [(head, body) for head, body, complete in shape if complete]
        for name, oracle in oracles:
            theirs, refused = oracle(data)
            for i, (head, body) in enumerate(mine):
                if i < len(theirs) and _same(head, body, theirs[i]):
                    continue
                if i == len(theirs) and not refused:
                    break  # the oracle closed the connection (h11 has no HTTP/1.0 keep-alive)
                if _oracle_gap(name, data, head[0]):
                    break
                raise AssertionError(
                    f"seed {seed} input #{n}: {data!r}\ncorral read {mine}\n{name} read {theirs}"
                )


@pytest.mark.timeout(3600 if LONG else 120)
def test_whole_and_trickled_agree() -> None:
    """The reader accepts the same requests whether input arrives whole or byte by byte."""
    seed = fuzz_seed()
    print(f"fuzz seed (splits): {seed}")
    rng = random.Random(seed)
    for n in range(SANS_IO_COUNT // 4):
        data = mutate(rng, rng.choice(BASES))
        whole_status, whole = outcome(data, len(data) or 1)
        split_status, split = outcome(data, 1)
        # A request with several faults may be refused for whichever shows first, so
        # statuses may differ; acceptance and everything delivered may not.
        assert (whole_status is None) == (split_status is None), f"seed {seed} #{n}: {data!r}"
        assert [(h, c) for h, _, c in whole] == [(h, c) for h, _, c in split], data
        if whole_status is None:  # after a refusal, how much body got out doesn't matter
            assert [b for _, b, _ in whole] == [b for _, b, _ in split], data


# --- through the full server ------------------------------------------------------------
SERVER_COUNT = 50_000 if LONG else 1_000  # per (loop, parser) stack: 2,000+ per parser in CI
CONCURRENCY = 32
IDLE = 0.25  # no byte for this long: the server is waiting for more of the request
PROBE_DEADLINE = 10.0  # a connection that neither closes nor goes quiet by then is a hang
#: 5xx a server may legitimately answer to a client's request (RFC 9110 §15.6).
PROTOCOL_5XX = {501, 505}


async def quiet_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body, answers a short fixed body; tolerates disconnects."""
    if scope["type"] != "http":
        return
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        if not message.get("more_body", False):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def response_statuses(data: bytes) -> list[int]:
    """Statuses of the complete responses in ``data``; raises if the stream is malformed."""
    statuses = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            raise AssertionError(f"truncated response head: {data[pos:]!r}")
        lines = data[pos:end].split(b"\r\n")
        version, status, *_ = lines[0].split(b" ", 2)
        assert version in (b"HTTP/1.1", b"HTTP/1.0"), lines[0]
        statuses.append(int(status))
        headers = dict(line.lower().split(b": ", 1) for line in lines[1:])
        pos = end + 4
        if int(status) in (100, 204, 304):
            continue
        if b"content-length" in headers:
            pos += int(headers[b"content-length"])
        elif headers.get(b"transfer-encoding") == b"chunked":
            while True:
                line_end = data.index(b"\r\n", pos)
                size = int(data[pos:line_end], 16)
                pos = line_end + 2 + size + 2
                if size == 0:
                    break
        else:
            pos = len(data)  # close-delimited
    return statuses


async def probe(port: int, data: bytes) -> tuple[bytes, str]:
    """Send ``data``; read until the server closes ("closed") or goes quiet ("waiting")."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = b""
    state = "waiting"
    try:
        writer.write(data)
        async with asyncio.timeout(PROBE_DEADLINE):
            while True:
                try:
                    chunk = await asyncio.wait_for(reader.read(65536), IDLE)
                except TimeoutError:
                    break
                except ConnectionResetError:
                    state = "reset"
                    break
                if not chunk:
                    state = "closed"
                    break
                received += chunk
    finally:
        writer.close()
    return received, state


async def fuzz_connections(port: int, rng: random.Random, count: int) -> dict[str, int]:
    tally: dict[str, int] = {}
    queue = [mutate(rng, rng.choice(BASES)) + rng.choice([b"", BASES[0]]) for _ in range(count)]

    async def worker() -> None:
        while queue:
            data = queue.pop()
            received, state = await probe(port, data)
            statuses = response_statuses(received)
            bad = [s for s in statuses if s >= 500 and s not in PROTOCOL_5XX]
            assert not bad, f"server error {bad} for {data!r}"
            tally[state] = tally.get(state, 0) + 1
            for status in statuses:
                tally[str(status)] = tally.get(str(status), 0) + 1

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return tally


@pytest.mark.timeout(7200 if LONG else 120)
@pytest.mark.parametrize("stack", STACKS, ids=["-".join(s) for s in STACKS])
def test_fuzz_server(stack: tuple[str, str], caplog: pytest.LogCaptureFixture) -> None:
    """Mutated requests through the full server: no server 5xx, no traceback, no hang."""
    seed = fuzz_seed()
    print(f"fuzz seed (server, {'-'.join(stack)}): {seed}, {SERVER_COUNT} connections")
    running = start_server(
        quiet_app,
        *stack,
        limit_request_body=1000,
        timeout_keep_alive=1.0,
        timeout_request_header=2.0,
        log_level="warning",
    )
    try:
        campaign = fuzz_connections(running.port, random.Random(seed), SERVER_COUNT)
        run_campaign(running, campaign, caplog)
    finally:
        running.stop()
