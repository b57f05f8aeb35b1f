"""``ssl_context_factory`` (Python API, as in uvicorn): the app's own SSLContext."""

from __future__ import annotations

import re
import signal
import ssl
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import trustme
from corral.config import Config
from corral.errors import ConfigError
from corral.tls import create_ssl_context

from tests.edge_harness import STACKS, serve
from tests.test_cli_e2e import DEADLINE, embedded
from tests.test_tls import ca, client_context, handshake, loop_name, pki, settings

__all__ = ["ca", "loop_name", "pki"]  # fixtures shared with test_tls

Factory = Callable[[Any, Callable[[], ssl.SSLContext]], Any]


def own_context(pki: SimpleNamespace) -> Factory:
    """A factory building its context from scratch, ignoring the default."""

    def factory(config: Any, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pki.cert, pki.key)
        return context

    return factory


def tls12_only(config: Any, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """A factory adjusting the --ssl-* context."""
    context = default()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    # For TLS 1.2 the --ssl-ciphers default ("TLSv1", as uvicorn's) has only SHA-1 suites,
    # which Python's default client context refuses.
    context.set_ciphers("ECDHE+AESGCM")
    return context


def test_factory_adjusts_the_default_context(
    pki: SimpleNamespace, ca: trustme.CA, loop_name: str
) -> None:
    """The default factory builds the --ssl-* context; the factory's changes take effect."""
    context = create_ssl_context(settings(pki, ssl_context_factory=tls12_only))
    ext, alpn, error = handshake(loop_name, context, client_context(ca))
    assert error is None and alpn == "http/1.1"
    assert ext is not None and ext["tls_version"] == 0x0303


def test_factory_without_certificate_settings(
    pki: SimpleNamespace, ca: trustme.CA, loop_name: str
) -> None:
    """A factory alone turns TLS on; corral still offers only http/1.1 by ALPN."""
    factory = own_context(pki)
    config = settings(pki, ssl_certfile=None, ssl_keyfile=None, ssl_context_factory=factory)
    ext, alpn, error = handshake(loop_name, create_ssl_context(config), client_context(ca))
    assert error is None and alpn == "http/1.1"
    assert ext is not None and ext["server_cert"] is None  # no file to read it from


@pytest.mark.parametrize(
    ("factory", "named"),
    [
        (lambda config, default: "not a context", "ssl_context_factory"),
        (lambda config, default: default(), "--ssl-certfile"),  # default needs the files
    ],
    ids=["wrong-type", "default-without-files"],
)
def test_factory_mistakes_name_the_setting(
    pki: SimpleNamespace, factory: Factory, named: str
) -> None:
    config = settings(pki, ssl_certfile=None, ssl_keyfile=None, ssl_context_factory=factory)
    with pytest.raises(ConfigError, match=named):
        create_ssl_context(config)


@pytest.mark.parametrize(("loop_kind", "http_kind"), STACKS)
def test_factory_end_to_end(
    pki: SimpleNamespace, ca: trustme.CA, loop_kind: str, http_kind: str
) -> None:
    """A server given only a factory serves https, and its banner URL says so."""
    with serve(loop_kind, http_kind, ssl_context_factory=own_context(pki)) as running:
        assert running.url().startswith("https://127.0.0.1:")
        with httpx.Client(verify=client_context(ca)) as client:
            scope = client.get(f"https://localhost:{running.port()}/").json()
    assert scope["scheme"] == "https" and scope["tls"]["tls_version"] == 0x0304


def test_factory_is_api_only() -> None:
    """It is a Config setting (corral.run takes it) with no command-line flag."""
    assert Config(app="main:app", ssl_context_factory=tls12_only).ssl_context_factory is tls12_only
    from corral.config import options

    assert "ssl_context_factory" not in {name for name, _, _ in options()}


EMBED = """
import ssl, sys
import corral
from main import app

def factory(config, default):
    if {broken}:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain({cert!r}, {key!r})
    return context

sys.exit(corral.run(app, port=0, workers=1, lifespan="off", ssl_context_factory=factory))
"""
HTTPS_BANNER = re.compile(r"corral running on https://127\.0\.0\.1:(\d+) ")


@pytest.mark.parametrize("broken", [False, True], ids=["serves", "broken"])
def test_factory_under_a_master(
    pki: SimpleNamespace, ca: trustme.CA, tmp_path: Path, broken: bool
) -> None:
    """corral.run(..., workers=1, ssl_context_factory=f) serves https from the worker; a
    factory returning no context stops the master before it forks, with exit code 2."""
    script = EMBED.format(broken=broken, cert=str(pki.cert), key=str(pki.key))
    with embedded(tmp_path, script) as server:
        if broken:
            code, stderr = server.finish()
            assert code == 2, stderr
            assert "ssl_context_factory" in stderr and "Traceback" not in stderr
            return
        port = int(server.wait_for(HTTPS_BANNER).group(1))
        with httpx.Client(verify=client_context(ca), timeout=DEADLINE) as client:
            assert client.get(f"https://localhost:{port}/").status_code == 200
        server.proc.send_signal(signal.SIGTERM)
        code, stderr = server.finish()
        assert code == 0, stderr
