"""The ``http.response.pathsend`` extension over real sockets, on every loop and parser."""

from __future__ import annotations

import errno
import os
import socket
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from corral.worker.asgi import pathsend

from tests.conftest import RawClient, get, wait_for


def file_app(
    path: Any, headers: list[tuple[bytes, bytes]] | None = None, before: Any = None
) -> Any:
    """An app that answers every request with ``path`` through pathsend."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        assert "http.response.pathsend" in scope["extensions"]
        await send({"type": "http.response.start", "status": 200, "headers": headers or []})
        if before is not None:
            await send(before)
        await send({"type": "http.response.pathsend", "path": str(path)})

    return app


@pytest.fixture
def big_file(tmp_path: Path) -> tuple[Path, bytes]:
    """3 MiB and a bit of random bytes: several pieces, and over any socket buffer."""
    data = os.urandom(3 * 1024 * 1024 + 12345)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    return path, data


def test_extension_advertised_and_file_sent_with_its_length(http_server, big_file):
    """The file arrives whole, with the Content-Length corral derived from its size."""
    path, data = big_file
    server = http_server(file_app(path))
    response = httpx.get(server.url(), timeout=30)
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(data))
    assert "transfer-encoding" not in response.headers
    assert response.content == data


REAL_PREAD = os.pread  # the tests below patch os.pread itself (pathsend.os is os)


def _not_cached(fd: int, buffers: Any, offset: int, flags: int = 0) -> int:
    raise BlockingIOError(errno.EAGAIN, "would wait for the disk")


def _unsupported(fd: int, buffers: Any, offset: int, flags: int = 0) -> int:
    raise OSError(errno.EOPNOTSUPP, "RWF_NOWAIT not supported here")


def _cached_prefix(fd: int, buffers: Any, offset: int, flags: int = 0) -> int:
    """Only the first MiB of the file is in the page cache."""
    if offset >= 1024 * 1024:
        return _not_cached(fd, buffers, offset)
    data = REAL_PREAD(fd, len(buffers[0]), offset)
    buffers[0][: len(data)] = data
    return len(data)


@pytest.mark.parametrize(
    ("preadv", "some_on_loop"),
    [(_not_cached, False), (_unsupported, False), (_cached_prefix, True)],
    ids=["not-cached", "unsupported", "cached-prefix"],
)
def test_uncached_pieces_are_read_in_a_thread(
    http_server, big_file, monkeypatch, preadv, some_on_loop
):
    """Pieces the page cache holds are read on the loop, the others in a thread, and the
    file arrives byte for byte."""
    path, data = big_file
    threads: set[str] = set()

    def pread(fd: int, size: int, offset: int) -> bytes:
        threads.add(threading.current_thread().name)
        return REAL_PREAD(fd, size, offset)

    monkeypatch.setattr(pathsend.os, "preadv", preadv)
    monkeypatch.setattr(pathsend.os, "pread", pread)
    server = http_server(file_app(path))
    response = httpx.get(server.url(), timeout=30)
    assert response.content == data
    assert ("corral-test-server" in threads) is some_on_loop  # the loop's thread
    assert threads - {"corral-test-server"}  # and at least one executor thread


def test_keep_alive_after_pathsend_and_apps_own_headers_kept(http_server, tmp_path):
    """Small and empty files on one connection; the app's Content-Type and length stand."""
    small = tmp_path / "small.txt"
    small.write_bytes(b"hello from a file\n")
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"18")]
    server = http_server(file_app(small, headers))
    with RawClient(server.port) as raw:
        for _ in range(3):
            raw.send(get())
            response = raw.read_response()
            assert response.status == 200
            assert response.body == b"hello from a file\n"
            assert response.header("content-type") == "text/plain"
            assert [v for k, v in response.headers if k == "content-length"] == ["18"]
    server = http_server(file_app(empty))
    with RawClient(server.port) as raw:
        raw.send(get() + get())
        assert [raw.read_response().body for _ in range(2)] == [b"", b""]


def test_head_gets_the_length_without_the_body(http_server, big_file):
    """HEAD: the file's size as Content-Length, no body, and the next response follows."""
    path, data = big_file
    server = http_server(file_app(path))
    with RawClient(server.port) as raw:
        raw.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n" + get())
        head = raw.read_response(head_request=True)
        assert head.status == 200
        assert head.header("content-length") == str(len(data))
        follow = raw.read_response()  # framing intact: the next response starts right after
        assert follow.body == data


def test_http10_client_gets_the_file_with_its_length(http_server, tmp_path):
    """An HTTP/1.0 client gets the file framed by Content-Length (never chunked)."""
    path = tmp_path / "a.txt"
    path.write_bytes(b"x" * 100_000)
    server = http_server(file_app(path))
    with RawClient(server.port) as raw:
        raw.send(b"GET / HTTP/1.0\r\n\r\n")
        response = raw.read_response()
        assert response.header("content-length") == "100000"
        assert response.body == b"x" * 100_000


@pytest.mark.parametrize(
    ("target", "logged"),
    [
        ("relative/file.txt", "needs an absolute path"),
        ("/nonexistent/corral-pathsend", "No such file"),
        ("DIR", "is not a regular file"),
        ("FIFO", "is not a regular file"),
    ],
)
def test_bad_path_is_a_500_and_one_logged_error(http_server, caplog, tmp_path, target, logged):
    """A path corral cannot send is the app's error: 500 before anything went out."""
    if target == "FIFO":  # opening it for reading would block until a writer came
        target = str(tmp_path / "fifo")
        os.mkfifo(target)
    server = http_server(file_app(tmp_path if target == "DIR" else target))
    with RawClient(server.port) as raw:
        raw.send(get())
        assert raw.read_response().status == 500
    wait_for(
        lambda: any(r.exc_info for r in caplog.records if r.name == "corral.error"),
        message="the app error to be logged",
    )
    errors = [r for r in caplog.records if r.name == "corral.error" and r.exc_info]
    assert len(errors) == 1
    assert logged in str(errors[0].exc_info[1])


def test_refused_response_header_gives_500_and_keeps_the_connection(http_server, big_file):
    """A header corral refuses (CR/LF in a value) turns the file response into a 500; the
    connection stays usable for the next request."""
    path, _ = big_file
    server = http_server(file_app(path, [(b"x-evil", b"a\r\nset-cookie: x=1")]))
    with RawClient(server.port) as raw:
        raw.send(get() + get())
        first, second = raw.read_response(), raw.read_response()
    assert first.status == second.status == 500
    assert first.header("set-cookie") is None


def test_pathsend_after_body_is_out_of_order(http_server, caplog, tmp_path):
    """pathsend is the whole body: after a body chunk it is an ASGI error, the connection ends."""
    path = tmp_path / "a.txt"
    path.write_bytes(b"abc")
    body = {"type": "http.response.body", "body": b"partial", "more_body": True}
    server = http_server(file_app(path, before=body))
    with RawClient(server.port) as raw:
        raw.send(get())
        assert b" 200 " in raw.read_until(b"\r\n\r\n")
        rest = raw.read_to_eof()  # the chunk sent, then closed without the final chunk
        assert b"partial" in rest and not rest.endswith(b"0\r\n\r\n")
    wait_for(
        lambda: any("pathsend" in r.getMessage() or r.exc_info for r in caplog.records),
        message="the out-of-order message to be logged",
    )


def test_slow_reader_does_not_buffer_the_whole_file(http_server, tmp_path):
    """Flow control holds: with a client that reads nothing, corral reads only a little of a
    large file ahead (the transport's high-water mark plus one piece), not all of it."""
    path = tmp_path / "large.bin"
    size = 64 * 1024 * 1024  # far more than the socket buffers hold
    with open(path, "wb") as out:
        out.truncate(size)  # sparse: costs no disk
    server = http_server(file_app(path))
    client = socket.create_connection(("127.0.0.1", server.port))
    try:
        client.sendall(get())

        def paused_buffer() -> int | None:
            """The write buffer once the server waits for the client; None before."""
            conns = server.connections
            if conns and conns[0].write_paused:
                return int(conns[0].transport.get_write_buffer_size())
            return None

        wait_for(lambda: paused_buffer() is not None, message="the server to wait for room")
        held = paused_buffer()
        assert held is not None and held < 1024 * 1024, f"{held} bytes buffered"
        received = 0
        while received < size:  # it all arrives once the client reads
            chunk = client.recv(1 << 20)
            assert chunk
            received += len(chunk)
        assert received >= size
    finally:
        client.close()


def test_client_gone_mid_file_closes_the_file_and_logs_no_error(http_server, caplog, tmp_path):
    """A client that leaves halfway: the app's send() raises ClientDisconnected, the file is
    closed, and no error is logged."""
    path = tmp_path / "large.bin"
    with open(path, "wb") as out:
        out.truncate(64 * 1024 * 1024)
    server = http_server(file_app(path))

    def file_open() -> bool:
        for fd in os.listdir("/proc/self/fd"):
            try:
                if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                    return True
            except OSError:
                continue
        return False

    with socket.create_connection(("127.0.0.1", server.port)) as client:
        client.sendall(get())
        assert client.recv(65536)
        wait_for(file_open, message="the server to open the file")
    wait_for(lambda: not server.connections, message="the server to drop the connection")
    wait_for(lambda: not file_open(), message="the file to be closed")
    assert not [r for r in caplog.records if r.name == "corral.error" and r.levelno >= 40]


def test_files_example_sends_through_pathsend_and_stays_in_its_directory(http_server):
    """examples/files.py: a file comes back byte for byte; paths outside the directory 404."""
    from examples import files

    server = http_server(files.app)
    with RawClient(server.port) as raw:
        raw.send(get("/hello.py"))
        response = raw.read_response()
        assert response.status == 200
        assert response.body == (files.ROOT / "hello.py").read_bytes()
        for target in ("/../README.md", "/%2e%2e/README.md", "/nope.txt"):
            raw.send(get(target))
            assert raw.read_response().status == 404
