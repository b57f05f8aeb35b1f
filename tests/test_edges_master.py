"""Network edges as users run corral: the CLI, --fd with two workers, cert reload on HUP."""

from __future__ import annotations

import re
import signal
import socket
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.master_apps import Running, get, wait_until, write_app

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def processes() -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for process in started:
        process.stop()


def start(started: list[Running], tmp_path: Path, *args: str, **kw: Any) -> Running:
    cmd = [sys.executable, "-m", "corral", "app_v:app", "--app-dir", str(tmp_path),
           "--no-access-log", *args]  # fmt: skip
    process = Running(cmd, str(tmp_path / f"corral{len(started)}.log"), cwd=ROOT, **kw)
    started.append(process)
    return process


def test_fd_shared_by_two_workers(processes: list[Running], tmp_path: Path) -> None:
    """--fd N --workers 2: both workers serve the one inherited listening socket."""
    write_app(tmp_path / "app_v.py", "1")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    fd = listener.fileno()
    server = start(processes, tmp_path, "--fd", str(fd), "--workers", "2", pass_fds=(fd,))
    listener.close()  # the master holds its own copy now
    server.wait_log(") ready", count=2, timeout=30)
    assert len(server.children()) == 2
    pids = set()
    for _ in range(200):
        status, body = get(port)
        assert status == 200 and body.startswith("version=1")
        pids.add(int(body.split("pid=")[1]))
        if len(pids) == 2:
            break
    assert pids <= set(server.children())
    assert len(pids) == 2, "only one worker ever answered"


def test_preload_reexec_with_given_fd_and_uds_removes_only_its_own_file(
    processes: list[Running], tmp_path: Path
) -> None:
    """--bind fd://N (a UNIX socket we were given) plus --uds, HUP with --preload, TERM: the
    --uds file corral created is removed at the stop, the given socket's file is left alone."""
    write_app(tmp_path / "app_v.py", "1")
    given_path, uds_path = tmp_path / "given.sock", tmp_path / "own.sock"
    given = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    given.bind(str(given_path))
    given.listen(16)
    fd = given.fileno()
    server = start(processes, tmp_path, "--bind", f"fd://{fd}", "--uds", str(uds_path),
                   "--workers", "1", "--preload", pass_fds=(fd,))  # fmt: skip
    given.close()
    server.wait_log(") ready", timeout=30)
    server.signal(signal.SIGHUP)
    server.wait_log("Reload complete", timeout=30)
    assert "Kept 2 listening socket(s)" in server.log()
    for path in (given_path, uds_path):
        status, body = get_unix(path)
        assert status == 200 and body.startswith("version=1")
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    assert not uds_path.exists(), "the --uds file corral created was left behind"
    assert given_path.exists(), "corral removed the socket file of the fd it was given"


def get_unix(path: Path) -> tuple[int, str]:
    """GET / over a UNIX socket; the status and body."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(10)
        client.connect(str(path))
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        chunks = []
        while chunk := client.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def served_cert(port: int, ca: trustme.CA) -> bytes:
    """The DER certificate a fresh TLS connection to the server presents."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def install(cert: trustme.LeafCert, directory: Path) -> None:
    """Write the cert and key the way a renewal tool would: replace the files atomically."""
    for name, blob in (("cert.pem", cert.cert_chain_pems[0]), ("key.pem", cert.private_key_pem)):
        tmp = directory / f"{name}.tmp"
        tmp.write_bytes(blob.bytes())
        tmp.replace(directory / name)


def test_hup_reload_serves_renewed_certificate(processes: list[Running], tmp_path: Path) -> None:
    """After the cert files are renewed, SIGHUP makes the new workers serve the new cert."""
    write_app(tmp_path / "app_v.py", "1")
    ca = trustme.CA()
    old, new = ca.issue_cert("localhost"), ca.issue_cert("localhost")
    install(old, tmp_path)
    server = start(processes, tmp_path, "--port", "0", "--workers", "2",
                   "--ssl-certfile", str(tmp_path / "cert.pem"),
                   "--ssl-keyfile", str(tmp_path / "key.pem"))  # fmt: skip
    log = server.wait_log(") ready", count=2, timeout=30)
    match = re.search(r"running on https://127\.0\.0\.1:(\d+)", log)
    assert match, log
    port = int(match.group(1))
    old_der = ssl.PEM_cert_to_DER_cert(old.cert_chain_pems[0].bytes().decode())
    new_der = ssl.PEM_cert_to_DER_cert(new.cert_chain_pems[0].bytes().decode())
    assert served_cert(port, ca) == old_der
    install(new, tmp_path)
    server.signal(signal.SIGHUP)
    server.wait_log("Reload complete", timeout=30)
    wait_until(lambda: len(server.children()) == 2, 30, "the old generation to exit")
    for _ in range(20):  # every worker of the new generation serves the renewed cert
        assert served_cert(port, ca) == new_der


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]])
@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--ssl-certfile", "/nonexistent/cert.pem"], "--ssl-certfile"),
        (["--forwarded-allow-ips", "10.0.0.300"], "--forwarded-allow-ips"),
    ],
)
def test_bad_edge_settings_exit_2(
    processes: list[Running], tmp_path: Path, workers: list[str], args: list[str], option: str
) -> None:
    """Unusable TLS or proxy settings stop corral with exit 2 and one line naming the option."""
    write_app(tmp_path / "app_v.py", "1")
    server = start(processes, tmp_path, "--port", "0", *workers, *args)
    assert server.wait(30) == 2
    errors = [line for line in server.log().splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and option in errors[0], server.log()
    assert "Traceback" not in server.log()


def test_cli_tls_flags_end_to_end(processes: list[Running], tmp_path: Path) -> None:
    """Every --ssl-* flag from the command line: encrypted key, mTLS, version, ciphers."""
    from cryptography.hazmat.primitives import serialization

    write_app(tmp_path / "app_v.py", "1")
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost")
    client = ca.issue_cert("client@example.com")
    (tmp_path / "cert.pem").write_bytes(leaf.cert_chain_pems[0].bytes())
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw")))  # fmt: skip
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server = start(processes, tmp_path, "--port", "0",
                   "--ssl-certfile", str(tmp_path / "cert.pem"),
                   "--ssl-keyfile", str(tmp_path / "key.pem"), "--ssl-keyfile-password", "pw",
                   "--ssl-ca-certs", str(tmp_path / "ca.pem"), "--ssl-cert-reqs", "2",
                   "--ssl-version", str(int(ssl.PROTOCOL_TLS_SERVER)),
                   "--ssl-ciphers", "ECDHE+AESGCM")  # fmt: skip
    log = server.wait_log("running on https://", timeout=30)
    match = re.search(r"running on https://127\.0\.0\.1:(\d+)", log)
    assert match, log
    context = ssl.create_default_context()
    ca.configure_trust(context)
    client.configure_cert(context)
    context.maximum_version = ssl.TLSVersion.TLSv1_2  # so --ssl-ciphers decides the suite
    with (
        socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        response = b""
        while chunk := tls.recv(65536):
            response += chunk
        cipher = tls.cipher()
    assert response.startswith(b"HTTP/1.1 200") and b"version=1" in response
    assert cipher is not None and "GCM" in cipher[0] and cipher[0].startswith("ECDHE")
