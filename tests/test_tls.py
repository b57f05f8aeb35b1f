"""TLS: the SSLContext built from --ssl-* settings and the ASGI TLS extension."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import trustme
import uvloop
from corral.errors import ConfigError
from corral.tls import TLS_VERSIONS, create_ssl_context, rfc4514_name, tls_extension
from corral.worker.edge.accept import Edge, Proxied
from corral.worker.serving import Acceptor
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from websockets.asyncio.client import connect as ws_connect

from tests.conftest import wait_for
from tests.edge_harness import DEADLINE, STACKS, serve

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def pki(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Server cert/key files, the CA bundle and a client cert issued by an intermediate CA."""
    root = tmp_path_factory.mktemp("pki")
    server = ca.issue_cert("localhost", "127.0.0.1", "::1")
    cert = root / "cert.pem"
    key = root / "key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    key.write_bytes(server.private_key_pem.bytes())
    ca_file = root / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    intermediate = ca.create_child_ca()
    client = intermediate.issue_cert(
        "client@example.com", common_name="alice, ops", organization_name="Example+Co"
    )
    return SimpleNamespace(
        cert=cert, key=key, ca_file=ca_file, server=server, client=client, root=root
    )


def settings(pki: SimpleNamespace, **overrides: Any) -> Any:
    """The ssl_* attributes create_ssl_context reads, with defaults as in Config."""
    values: dict[str, Any] = {
        "ssl_certfile": str(pki.cert),
        "ssl_keyfile": str(pki.key),
        "ssl_keyfile_password": None,
        "ssl_version": int(ssl.PROTOCOL_TLS_SERVER),
        "ssl_cert_reqs": int(ssl.CERT_NONE),
        "ssl_ca_certs": None,
        "ssl_ciphers": "TLSv1",
        "ssl_context_factory": None,
    }
    values.update(overrides)
    return SimpleNamespace(**values)


def client_context(ca: trustme.CA, cert: trustme.LeafCert | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if cert is not None:
        cert.configure_cert(context)
    context.set_alpn_protocols(["http/1.1"])
    return context


def handshake(
    loop_name: str, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, host: str = "127.0.0.1"
) -> tuple[dict[str, Any] | None, str | None, BaseException | None]:
    """Serve one TLS connection on a real socket; return (extension, client ALPN, client error)."""
    seen: list[dict[str, Any]] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(tls_extension(writer.get_extra_info("ssl_object")))
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    async def main() -> tuple[str | None, BaseException | None]:
        server = await asyncio.start_server(on_connect, host, 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection(
                host, port, ssl=client_ctx, server_hostname="localhost"
            )
            alpn = writer.get_extra_info("ssl_object").selected_alpn_protocol()
            data = await reader.read()
            writer.close()
            if data != b"ok":
                return alpn, ConnectionError("server closed without answering")
            return alpn, None
        except (ssl.SSLError, OSError) as exc:
            return None, exc
        finally:
            server.close()
            await server.wait_closed()

    loop = LOOPS[loop_name]()
    try:
        alpn, error = loop.run_until_complete(asyncio.wait_for(main(), 10))
    finally:
        loop.close()
    return (seen[0] if seen else None), alpn, error


@pytest.fixture(params=sorted(LOOPS))
def loop_name(request: pytest.FixtureRequest) -> Iterator[str]:
    yield request.param


# --- building the context -----------------------------------------------------------------


def test_no_certfile_means_no_tls(pki: SimpleNamespace) -> None:
    """Without --ssl-certfile there is no context."""
    assert create_ssl_context(settings(pki, ssl_certfile=None, ssl_keyfile=None)) is None


def test_context_advertises_http11_and_verifies_nothing_by_default(
    pki: SimpleNamespace, ca: trustme.CA, loop_name: str
) -> None:
    """The default context serves TLS, negotiates ALPN http/1.1 and asks no client cert."""
    ext, alpn, error = handshake(loop_name, create_ssl_context(settings(pki)), client_context(ca))
    assert error is None and alpn == "http/1.1"
    assert ext is not None and ext["client_cert_chain"] == [] and ext["client_cert_name"] is None


def test_certfile_holding_the_key(pki: SimpleNamespace) -> None:
    """--ssl-certfile alone works when the file also holds the key."""
    combined = pki.root / "combined.pem"
    combined.write_bytes(pki.key.read_bytes() + pki.cert.read_bytes())
    assert create_ssl_context(settings(pki, ssl_certfile=str(combined), ssl_keyfile=None))


def test_encrypted_key_with_password(pki: SimpleNamespace) -> None:
    """--ssl-keyfile-password decrypts an encrypted key; a wrong one names the option."""
    key = serialization.load_pem_private_key(pki.key.read_bytes(), password=None)
    encrypted = pki.root / "encrypted.pem"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"s3cret"),
        )
    )
    good = settings(pki, ssl_keyfile=str(encrypted), ssl_keyfile_password="s3cret")
    assert create_ssl_context(good) is not None
    bad = settings(pki, ssl_keyfile=str(encrypted), ssl_keyfile_password="wrong")
    with pytest.raises(ConfigError, match=r"--ssl-keyfile-password.*does not decrypt"):
        create_ssl_context(bad)
    missing = settings(pki, ssl_keyfile=str(encrypted))
    with pytest.raises(ConfigError, match=r"--ssl-keyfile-password.*encrypted"):
        create_ssl_context(missing)


@pytest.mark.parametrize(
    ("overrides", "option"),
    [
        ({"ssl_certfile": "/nonexistent/cert.pem"}, "--ssl-certfile"),
        ({"ssl_keyfile": "/nonexistent/key.pem"}, "--ssl-keyfile"),
        ({"ssl_ciphers": "NO-SUCH-CIPHER"}, "--ssl-ciphers"),
        ({"ssl_version": 99}, "--ssl-version"),
        ({"ssl_cert_reqs": 7}, "--ssl-cert-reqs"),
        ({"ssl_cert_reqs": 2}, "--ssl-cert-reqs"),
        ({"ssl_cert_reqs": 2, "ssl_ca_certs": "/nonexistent/ca.pem"}, "--ssl-ca-certs"),
    ],
)
def test_bad_settings_name_the_option(
    pki: SimpleNamespace, overrides: dict[str, Any], option: str
) -> None:
    """Unusable files, ciphers, versions or cert-reqs raise ConfigError naming the option."""
    with pytest.raises(ConfigError, match=option):
        create_ssl_context(settings(pki, **overrides))


def test_swapped_cert_and_key(pki: SimpleNamespace) -> None:
    """A key where the certificate belongs is a ConfigError, not a traceback."""
    with pytest.raises(ConfigError, match="--ssl-certfile"):
        create_ssl_context(settings(pki, ssl_certfile=str(pki.key), ssl_keyfile=str(pki.cert)))


def test_fresh_context_reads_renewed_files(pki: SimpleNamespace, ca: trustme.CA) -> None:
    """Each call re-reads the files, so a reload serves a renewed certificate."""
    first = create_ssl_context(settings(pki))
    renewed = ca.issue_cert("localhost", "127.0.0.1")
    root = pki.root / "renewed"
    root.mkdir()
    (root / "cert.pem").write_bytes(renewed.cert_chain_pems[0].bytes())
    (root / "key.pem").write_bytes(renewed.private_key_pem.bytes())
    second = create_ssl_context(
        settings(pki, ssl_certfile=str(root / "cert.pem"), ssl_keyfile=str(root / "key.pem"))
    )
    assert first is not second
    ext, _, error = handshake("asyncio", second, client_context(ca))
    assert error is None and ext is not None
    assert ext["server_cert"] == renewed.cert_chain_pems[0].bytes().decode()


# --- mTLS and the extension -----------------------------------------------------------------


def test_mtls_required_rejects_client_without_cert(
    pki: SimpleNamespace, ca: trustme.CA, loop_name: str
) -> None:
    """--ssl-cert-reqs 2 refuses a client that sends no certificate."""
    ctx = create_ssl_context(settings(pki, ssl_cert_reqs=2, ssl_ca_certs=str(pki.ca_file)))
    ext, _, error = handshake(loop_name, ctx, client_context(ca))
    assert ext is None and error is not None


def test_mtls_rejects_cert_from_unknown_ca(
    pki: SimpleNamespace, ca: trustme.CA, loop_name: str
) -> None:
    """A client certificate from a CA the server does not trust fails the handshake."""
    ctx = create_ssl_context(settings(pki, ssl_cert_reqs=2, ssl_ca_certs=str(pki.ca_file)))
    stranger = trustme.CA().issue_cert("mallory@example.com")
    ext, _, error = handshake(loop_name, ctx, client_context(ca, stranger))
    assert ext is None and error is not None


def test_mtls_extension_contents(pki: SimpleNamespace, ca: trustme.CA, loop_name: str) -> None:
    """With a verified client cert, every field of the TLS extension is filled correctly."""
    ctx = create_ssl_context(settings(pki, ssl_cert_reqs=2, ssl_ca_certs=str(pki.ca_file)))
    ext, _, error = handshake(loop_name, ctx, client_context(ca, pki.client))
    assert error is None and ext is not None
    assert set(ext) == {"server_cert", "client_cert_chain", "client_cert_name",
                        "client_cert_error", "tls_version", "cipher_suite"}  # fmt: skip
    assert ext["server_cert"] == pki.server.cert_chain_pems[0].bytes().decode()
    leaf = pki.client.cert_chain_pems[0].bytes().decode()
    assert ext["client_cert_chain"][0] == leaf
    if sys.version_info >= (3, 13):
        assert len(ext["client_cert_chain"]) >= 2  # leaf, intermediate (and root)
        assert ext["client_cert_chain"][1] == pki.client.cert_chain_pems[1].bytes().decode()
    else:
        assert ext["client_cert_chain"] == [leaf]
    subject = x509.load_pem_x509_certificate(leaf.encode()).subject.rfc4514_string()
    assert ext["client_cert_name"] == subject
    assert ext["client_cert_name"].startswith("CN=alice\\, ops,OU=")
    assert ext["client_cert_error"] is None
    assert ext["tls_version"] == TLS_VERSIONS["TLSv1.3"] == 0x0304
    assert ext["cipher_suite"] in (0x1301, 0x1302, 0x1303)


def test_optional_client_cert(pki: SimpleNamespace, ca: trustme.CA) -> None:
    """--ssl-cert-reqs 1 accepts clients with and without certificates."""
    ctx = create_ssl_context(settings(pki, ssl_cert_reqs=1, ssl_ca_certs=str(pki.ca_file)))
    ext, _, error = handshake("asyncio", ctx, client_context(ca))
    assert error is None and ext is not None and ext["client_cert_chain"] == []
    ext, _, error = handshake("asyncio", ctx, client_context(ca, pki.client))
    assert error is None and ext is not None and ext["client_cert_name"]


def test_tls12_version_and_cipher_suite_ids(pki: SimpleNamespace, ca: trustme.CA) -> None:
    """TLS 1.2 reports 0x0303 and the IANA number of the negotiated suite."""
    client = client_context(ca)
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    client.set_ciphers("ECDHE-ECDSA-AES128-SHA")
    ext, _, error = handshake("asyncio", create_ssl_context(settings(pki)), client)
    assert error is None and ext is not None
    assert ext["tls_version"] == 0x0303
    assert ext["cipher_suite"] == 0xC009  # TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA


def test_ipv6_loopback_tls(pki: SimpleNamespace, ca: trustme.CA) -> None:
    """TLS works on the IPv6 loopback."""
    try:
        import socket

        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    _, alpn, error = handshake("asyncio", create_ssl_context(settings(pki)), client_context(ca),
                               host="::1")  # fmt: skip
    assert error is None and alpn == "http/1.1"


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ((( ("commonName", "a"),),), "CN=a"),
        (((("countryName", "US"),), (("organizationName", "X"),), (("commonName", "y"),)),
         "CN=y,O=X,C=US"),
        (((("commonName", " lead#"),),), "CN=\\ lead#"),
        (((("commonName", "#x "),),), "CN=\\#x\\ "),
        (((("commonName", 'q"<>;\\'),),), 'CN=q\\"\\<\\>\\;\\\\'),
        (((("commonName", "a"), ("userId", "b")),), "CN=a+UID=b"),
        (((("emailAddress", "a@b"),),), "emailAddress=a@b"),
    ],
)  # fmt: skip
def test_rfc4514_names(subject: Any, expected: str) -> None:
    """Subjects render as RFC 4514 strings: reversed RDNs, short keys, escaping."""
    assert rfc4514_name(subject) == expected


def test_ca_fixture_paths_exist(pki: SimpleNamespace) -> None:
    """The generated PKI lives only in the test's temp dir (no keys in the repo)."""
    assert Path(pki.key).is_relative_to(pki.root)


# --- the edge acceptor: handshake failures and PROXY before TLS ------------------------------


class Hello(asyncio.Protocol):
    """Answers with the client the edge handed over and the connection's TLS version."""

    def __init__(self, proxied: Proxied | None = None) -> None:
        self.proxied = proxied

    def connection_made(self, transport: Any) -> None:
        ext = tls_extension(transport.get_extra_info("ssl_object"))
        client = self.proxied.client if self.proxied else "peer"
        transport.write(f"client={client} tls={ext['tls_version']:#x}".encode())
        transport.close()


def edge_config(pki: SimpleNamespace, **overrides: Any) -> Any:
    values = vars(settings(pki))
    values.update(proxy_protocol=False, proxy_headers=False, trusted_proxies=(),
                  timeout_request_header=5.0)  # fmt: skip
    values.update(overrides)
    return SimpleNamespace(**values)


def serve_edge(
    loop_name: str, config: Any, client: Callable[[int], Any]
) -> tuple[Any, list[logging.LogRecord]]:
    """Run an EdgeAcceptor and one client coroutine against it; return its result."""

    async def main() -> Any:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        acceptor = Acceptor(asyncio.get_running_loop(), listener, Hello, Edge(config))
        acceptor.start()
        try:
            return await client(listener.getsockname()[1])
        finally:
            acceptor.stop()
            listener.close()

    loop = LOOPS[loop_name]()
    try:
        return loop.run_until_complete(asyncio.wait_for(main(), 10)), []
    finally:
        loop.close()


def test_edge_failed_handshake_is_one_debug_line(
    pki: SimpleNamespace, loop_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Plain HTTP to a TLS port, and a client distrusting the cert: one debug line each."""
    caplog.set_level(logging.DEBUG)

    async def plain(port: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            data = await reader.read()
        except ConnectionResetError:
            data = b""
        writer.close()
        return data

    result, _ = serve_edge(loop_name, edge_config(pki), plain)
    assert result == b""
    edge_lines = [r for r in caplog.records if r.name == "corral.error"]
    assert len(edge_lines) == 1 and edge_lines[0].levelno == logging.DEBUG
    assert "TLS handshake" in edge_lines[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]


def test_edge_proxy_header_then_tls(pki: SimpleNamespace, ca: trustme.CA, loop_name: str) -> None:
    """A PROXY header before the ClientHello names the client of a TLS connection."""

    async def client(port: int) -> bytes:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"PROXY TCP6 2001:db8::2 ::1 1234 443\r\n")
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(
            sock=sock, ssl=client_context(ca), server_hostname="localhost"
        )
        data = await reader.read()
        writer.close()
        return data

    result, _ = serve_edge(loop_name, edge_config(pki, proxy_protocol=True), client)
    assert result == b"client=('2001:db8::2', 1234) tls=0x304"


# --- end to end: a real corral Server over TLS -----------------------------------------------


def tls_settings(pki: SimpleNamespace, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"ssl_certfile": str(pki.cert), "ssl_keyfile": str(pki.key)}
    values.update(overrides)
    return values


@pytest.mark.parametrize(("loop_kind", "http_kind"), STACKS)
def test_https_scope_and_extension(
    pki: SimpleNamespace, ca: trustme.CA, loop_kind: str, http_kind: str
) -> None:
    """Over TLS the scope says https and carries the TLS extension (no client cert)."""
    with serve(loop_kind, http_kind, **tls_settings(pki)) as running:
        assert running.url().startswith("https://127.0.0.1:")
        with httpx.Client(verify=client_context(ca)) as client:
            first = client.get(f"https://localhost:{running.port()}/").json()
            second = client.get(f"https://localhost:{running.port()}/").json()
    assert first["scheme"] == "https"
    tls = first["tls"]
    assert tls["server_cert"] == pki.server.cert_chain_pems[0].bytes().decode()
    assert tls["client_cert_chain"] == [] and tls["client_cert_name"] is None
    assert tls["client_cert_error"] is None and tls["tls_version"] == 0x0304
    assert isinstance(tls["cipher_suite"], int)
    assert second == first  # keep-alive: the same connection, the same extension


@pytest.mark.parametrize(("loop_kind", "http_kind"), STACKS)
def test_mtls_end_to_end(
    pki: SimpleNamespace,
    ca: trustme.CA,
    loop_kind: str,
    http_kind: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """--ssl-cert-reqs 2: a client cert reaches the app; no cert is refused with a debug line."""
    caplog.set_level(logging.DEBUG, logger="corral.error")
    settings_ = tls_settings(pki, ssl_cert_reqs=2, ssl_ca_certs=str(pki.ca_file))
    with serve(loop_kind, http_kind, **settings_) as running:
        url = f"https://localhost:{running.port()}/"
        with httpx.Client(verify=client_context(ca, pki.client)) as client:
            tls = client.get(url).json()["tls"]
        with pytest.raises(httpx.TransportError), httpx.Client(verify=client_context(ca)) as c:
            c.get(url)
        wait_for(lambda: any("TLS handshake" in r.getMessage() for r in caplog.records))
    assert tls["client_cert_chain"][0] == pki.client.cert_chain_pems[0].bytes().decode()
    assert tls["client_cert_name"].startswith("CN=alice\\, ops,")
    assert tls["client_cert_error"] is None
    failures = [r for r in caplog.records if "TLS handshake" in r.getMessage()]
    assert len(failures) == 1 and failures[0].levelno == logging.DEBUG
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.mark.parametrize(("loop_kind", "http_kind"), STACKS[::3])
def test_plain_http_to_tls_port_is_quiet(
    pki: SimpleNamespace, loop_kind: str, http_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Plain HTTP to the TLS port fails the handshake: one debug line, never a traceback."""
    caplog.set_level(logging.DEBUG)
    with serve(loop_kind, http_kind, **tls_settings(pki)) as running:
        with socket.create_connection(("127.0.0.1", running.port()), timeout=DEADLINE) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                assert sock.recv(100) == b""
            except ConnectionResetError:
                pass
        wait_for(lambda: any("TLS handshake" in r.getMessage() for r in caplog.records))
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]


def test_alpn_http11_end_to_end(pki: SimpleNamespace, ca: trustme.CA) -> None:
    """The server selects http/1.1 for a client offering h2 and http/1.1."""
    context = client_context(ca)
    context.set_alpn_protocols(["h2", "http/1.1"])
    with serve("uvloop", "httptools", **tls_settings(pki)) as running:
        raw = socket.create_connection(("127.0.0.1", running.port()), timeout=DEADLINE)
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.selected_alpn_protocol() == "http/1.1"


@pytest.mark.parametrize(("loop_kind", "http_kind"), STACKS[::3])
def test_wss_scope(pki: SimpleNamespace, ca: trustme.CA, loop_kind: str, http_kind: str) -> None:
    """A WebSocket over TLS has scheme wss and the TLS extension."""

    async def talk(port: int) -> dict[str, Any]:
        async with ws_connect(f"wss://localhost:{port}/", ssl=client_context(ca)) as ws:
            return dict(json.loads(await ws.recv()))

    with serve(loop_kind, http_kind, **tls_settings(pki)) as running:
        report = asyncio.run(talk(running.port()))
    assert report["type"] == "websocket" and report["scheme"] == "wss"
    assert report["tls"]["tls_version"] == 0x0304


def test_bad_tls_settings_refuse_to_start(pki: SimpleNamespace) -> None:
    """A missing certificate file stops the server with a ConfigError naming the option."""
    with (
        pytest.raises(AssertionError, match="--ssl-certfile"),
        serve("asyncio", "h11", ssl_certfile=str(pki.root / "missing.pem")),
    ):
        pass


def test_proxy_protocol_before_tls_end_to_end(pki: SimpleNamespace, ca: trustme.CA) -> None:
    """--proxy-protocol with TLS: the header precedes the ClientHello and names the client."""
    with serve("uvloop", "httptools", proxy_protocol=True, **tls_settings(pki)) as running:
        raw = socket.create_connection(("127.0.0.1", running.port()), timeout=DEADLINE)
        raw.sendall(b"PROXY TCP4 192.0.2.200 10.0.0.1 6000 443\r\n")
        with client_context(ca).wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            response = b""
            while chunk := tls.recv(65536):
                response += chunk
    report = json.loads(response.partition(b"\r\n\r\n")[2])
    assert report["client"] == ["192.0.2.200", 6000] and report["scheme"] == "https"
    assert report["tls"]["tls_version"] == 0x0304


def test_handshake_in_progress_at_stop_is_served(
    pki: SimpleNamespace, ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    """A connection still in its TLS handshake when the drain starts is served, not cut."""
    caplog.set_level(logging.INFO, logger="corral.error")
    with serve("uvloop", "httptools", **tls_settings(pki)) as running:
        raw = socket.create_connection(("127.0.0.1", running.port()), timeout=DEADLINE)
        wait_for(lambda: any(a.pending for a in running.server._acceptors))
        running.server.request_stop()
        wait_for(lambda: any("Shutting down" in r.getMessage() for r in caplog.records))
        with client_context(ca).wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            response = b""
            while chunk := tls.recv(65536):
                response += chunk
    # Served in full, then closed (the loop above read to EOF). Whether the head says
    # Connection: close depends on whether the drain began before the app answered.
    assert response.startswith(b"HTTP/1.1 200") and response.endswith(b"}")
