"""Proxy headers: trusted-proxy matching and client/scheme/host resolution (pure)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from corral.worker.edge.proxy_headers import apply_to_scope, parse_trusted, resolve
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.client import connect as ws_connect

from tests.conftest import wait_for
from tests.edge_harness import STACKS, serve

DEFAULT = parse_trusted(["127.0.0.1", "::1"])
PEER = ("127.0.0.1", 40000)
STRANGER = ("203.0.113.9", 40000)


def h(*pairs: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.encode(), value.encode("latin-1")) for name, value in pairs]


# --- the trusted-proxy matcher ------------------------------------------------------------


def test_matcher_ips_networks_and_wildcard() -> None:
    """IPs, CIDR networks (v4 and v6) and '*' are matched as given."""
    trusted = parse_trusted(["10.0.0.0/8", "192.0.2.1", "2001:db8::/32"])
    assert trusted.trusts_host("10.200.3.4")
    assert trusted.trusts_host("192.0.2.1")
    assert not trusted.trusts_host("192.0.2.2")
    assert trusted.trusts_host("2001:db8::99")
    assert not trusted.trusts_host("2001:db9::1")
    assert parse_trusted(["*"]).trusts_host("198.51.100.7")
    assert parse_trusted(["*"]).trusts_peer(None)


def test_matcher_ipv4_mapped_peer() -> None:
    """A dual-stack listener's ::ffff:127.0.0.1 peer matches a trusted 127.0.0.1."""
    assert DEFAULT.trusts_peer(("::ffff:127.0.0.1", 1))
    assert not DEFAULT.trusts_peer(("::ffff:10.0.0.1", 1))


@pytest.mark.parametrize("literal", ["unix", "unix:/run/app.sock", "/run/app.sock"])
def test_matcher_unix_literal_trusts_unix_peers(literal: str) -> None:
    """A Unix-socket literal trusts Unix-socket peers (client None); the default does not."""
    assert parse_trusted([literal]).trusts_peer(None)
    assert not DEFAULT.trusts_peer(None)


def test_matcher_other_literals_match_hops() -> None:
    """Non-address literals such as obfuscated node names are trusted hops by exact match."""
    trusted = parse_trusted(["127.0.0.1", "_edge"])
    assert trusted.trusts_host("_edge")
    assert not trusted.trusts_host("_other")


@pytest.mark.parametrize("bad", ["10.0.0.300", "10.0.0.0/33", "::g/64", "1.2.3.4/x"])
def test_matcher_rejects_broken_addresses(bad: str) -> None:
    """Something that looks like an IP or network but does not parse is a ValueError."""
    with pytest.raises(ValueError, match="valid IP"):
        parse_trusted([bad])


# --- X-Forwarded-For / X-Forwarded-Proto ----------------------------------------------------


def test_no_headers_returns_inputs() -> None:
    """Without proxy headers the peer and scheme pass through unchanged."""
    headers = h(("host", "example.com"), ("accept", "*/*"))
    assert resolve(PEER, "http", headers, DEFAULT) == (PEER, "http", None)


def test_untrusted_peer_headers_ignored() -> None:
    """Headers from a peer outside --forwarded-allow-ips change nothing."""
    headers = h(("x-forwarded-for", "1.2.3.4"), ("x-forwarded-proto", "https"),
                ("forwarded", "for=1.2.3.4;proto=https;host=evil"))  # fmt: skip
    assert resolve(STRANGER, "http", headers, DEFAULT) == (STRANGER, "http", None)
    assert resolve(None, "http", headers, DEFAULT) == (None, "http", None)


def test_xff_single_hop() -> None:
    """A trusted proxy's X-Forwarded-For names the client (port 0)."""
    client, scheme, host = resolve(PEER, "http", h(("x-forwarded-for", "1.2.3.4")), DEFAULT)
    assert (client, scheme, host) == (("1.2.3.4", 0), "http", None)


def test_xff_rightmost_untrusted_hop() -> None:
    """The client is the right-most hop not in the trusted set; forged left hops lose."""
    trusted = parse_trusted(["127.0.0.1", "10.0.0.0/8"])
    headers = h(("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.5, 10.0.0.6"))
    assert resolve(PEER, "http", headers, trusted)[0] == ("1.2.3.4", 0)


def test_xff_all_trusted_uses_leftmost() -> None:
    """When every hop is trusted the left-most one is the client."""
    trusted = parse_trusted(["127.0.0.1", "10.0.0.0/8"])
    headers = h(("x-forwarded-for", "10.0.0.1, 10.0.0.2"))
    assert resolve(PEER, "http", headers, trusted)[0] == ("10.0.0.1", 0)
    assert resolve(PEER, "http", h(("x-forwarded-for", "1.1.1.1, 2.2.2.2")),
                   parse_trusted(["*"]))[0] == ("1.1.1.1", 0)  # fmt: skip


def test_xff_multiple_header_lines_combine() -> None:
    """Repeated X-Forwarded-For lines are one list in order."""
    trusted = parse_trusted(["127.0.0.1", "10.0.0.9"])
    headers = h(("x-forwarded-for", "5.5.5.5"), ("x-forwarded-for", "10.0.0.9"))
    assert resolve(PEER, "http", headers, trusted)[0] == ("5.5.5.5", 0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2001:db8::7", ("2001:db8::7", 0)),
        ("[2001:db8::7]:8443", ("2001:db8::7", 8443)),
        ("1.2.3.4:5678", ("1.2.3.4", 5678)),
        ("unknown", ("unknown", 0)),
    ],
)
def test_xff_address_forms(value: str, expected: tuple[str, int]) -> None:
    """IPv6, bracketed IPv6 with port, IPv4 with port and 'unknown' hops are understood."""
    assert resolve(PEER, "http", h(("x-forwarded-for", value)), DEFAULT)[0] == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "not an ip",
        "1.2.3.4,,5.6.7.8",
        "999.1.1.1",
        "1.2.3.4:99999",
        "[::1",
        "<script>",
        "1.2.3.4:",
        "\xff\xfe",
    ],
)
def test_xff_malformed_ignored(value: str) -> None:
    """A malformed X-Forwarded-For leaves the peer as the client."""
    assert resolve(PEER, "http", h(("x-forwarded-for", value)), DEFAULT)[0] == PEER


@pytest.mark.parametrize(
    ("proto", "scope_scheme", "expected"),
    [
        ("https", "http", "https"),
        ("http", "https", "http"),
        ("wss", "http", "https"),
        ("ws", "https", "http"),
        ("HTTPS", "http", "https"),
        (" https ", "http", "https"),
        ("https", "ws", "wss"),
        ("http", "wss", "ws"),
        ("ftp", "http", "http"),
        ("javascript:alert(1)", "http", "http"),
        ("", "https", "https"),
    ],
)
def test_xfp_values(proto: str, scope_scheme: str, expected: str) -> None:
    """X-Forwarded-Proto accepts http/https/ws/wss in the scope's family; others ignored."""
    headers = h(("x-forwarded-proto", proto))
    assert resolve(PEER, scope_scheme, headers, DEFAULT)[1] == expected


def test_xfp_list_aligned_with_chosen_hop() -> None:
    """With a proto list, the entry matching the chosen client hop is used."""
    trusted = parse_trusted(["127.0.0.1", "10.0.0.0/8"])
    headers = h(("x-forwarded-for", "1.2.3.4, 10.0.0.2"), ("x-forwarded-proto", "https, http"))
    assert resolve(PEER, "http", headers, trusted)[:2] == (("1.2.3.4", 0), "https")


# --- RFC 7239 Forwarded ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("for=192.0.2.60;proto=https;by=203.0.113.43", (("192.0.2.60", 0), "https", None)),
        ('for="[2001:db8:cafe::17]:4711"', (("2001:db8:cafe::17", 4711), "http", None)),
        ('For="192.0.2.43:47011";Proto=HTTPS', (("192.0.2.43", 47011), "https", None)),
        ("for=192.0.2.43, for=198.51.100.17", (("198.51.100.17", 0), "http", None)),
        ("host=example.com:8443;proto=https", (PEER, "https", "example.com:8443")),
        ('for="_gazonk"', (("_gazonk", 0), "http", None)),
        ("for=unknown;proto=https", (("unknown", 0), "https", None)),
        ('for="[::1]:_port"', (("::1", 0), "http", None)),
        ("for=1.2.3.4 ; proto=https", (("1.2.3.4", 0), "https", None)),
        ('for="1.2.3.4";host="a\\.b"', (("1.2.3.4", 0), "http", "a.b")),
    ],
)
def test_forwarded_forms(value: str, expected: tuple[object, str, str | None]) -> None:
    """Forwarded: token, quoted, IPv6, ports, obfuscation, case and whitespace forms."""
    assert resolve(PEER, "http", h(("forwarded", value)), DEFAULT) == expected


def test_forwarded_rightmost_untrusted_element_supplies_proto_and_host() -> None:
    """The chosen element's proto and host apply, not a forged or inner one."""
    trusted = parse_trusted(["127.0.0.1", "10.0.0.0/8"])
    value = "for=6.6.6.6;proto=http;host=evil, for=1.2.3.4;proto=https;host=shop.example, for=10.0.0.3;proto=http"  # noqa: E501
    assert resolve(PEER, "http", h(("forwarded", value)), trusted) == (
        ("1.2.3.4", 0), "https", "shop.example")  # fmt: skip


@pytest.mark.parametrize(
    "value",
    [
        'for="1.2.3.4',
        "for",
        "for=1.2.3.4;for=5.6.7.8",
        "for=nonsense",
        "=1.2.3.4",
        "for=1.2.3.4 junk",
        "for = 1.2.3.4",
        ";;;",
        ",",
        'for="[::1"',
        "for=1.2.3.4;host=a b",
    ],
)
def test_forwarded_malformed_ignored(value: str) -> None:
    """A malformed Forwarded header never changes the client."""
    client, scheme, host = resolve(PEER, "http", h(("forwarded", value)), DEFAULT)
    assert client == PEER and scheme == "http"
    assert host is None or " " not in host


def test_forwarded_host_rejects_garbage() -> None:
    """A host with characters no Host header may hold is dropped."""
    for host in ['"evil.com/path"', '"a\\"b"', '"x\r\ny"', '"' + "a" * 300 + '"']:
        assert resolve(PEER, "http", h(("forwarded", f"host={host}")), DEFAULT)[2] is None


def test_x_headers_win_over_forwarded() -> None:
    """X-Forwarded-For/-Proto take precedence field by field; Forwarded still gives host."""
    headers = h(("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=6.6.6.6;proto=https;host=h"))
    assert resolve(PEER, "http", headers, DEFAULT) == (("1.2.3.4", 0), "https", "h")
    headers = h(("x-forwarded-proto", "http"), ("forwarded", "for=5.5.5.5;proto=https"))
    assert resolve(PEER, "https", headers, DEFAULT) == (("5.5.5.5", 0), "http", None)


def test_unix_peer_trusted_by_literal() -> None:
    """A Unix-socket peer's headers count when a Unix literal is trusted."""
    trusted = parse_trusted(["unix"])
    assert resolve(None, "http", h(("x-forwarded-for", "1.2.3.4")), trusted)[0] == ("1.2.3.4", 0)


header_names = st.sampled_from([b"x-forwarded-for", b"x-forwarded-proto", b"forwarded", b"host"])


@given(st.lists(st.tuples(header_names, st.binary(max_size=60)), max_size=5))
def test_fuzz_never_raises_and_client_is_sane(headers: list[tuple[bytes, bytes]]) -> None:
    """Arbitrary header bytes never raise, and the scope stays well-formed."""
    client, scheme, host = resolve(PEER, "http", headers, parse_trusted(["*"]))
    assert scheme in ("http", "https")
    assert client is not None and isinstance(client[1], int) and 0 <= client[1] <= 65535
    assert all(c.isprintable() and c not in ' ,;"' for c in client[0])
    assert host is None or (host.isascii() and host.isprintable() and " " not in host)


def test_apply_to_scope_rewrites_client_scheme_and_host() -> None:
    """The scope gets the resolved client and scheme, and Forwarded's host as Host."""
    scope = {"client": PEER, "scheme": "http",
             "headers": h(("host", "internal:8000"), ("forwarded", "for=1.2.3.4;proto=https;host=shop.example"))}  # fmt: skip  # noqa: E501
    apply_to_scope(scope, DEFAULT)
    assert scope["client"] == ("1.2.3.4", 0) and scope["scheme"] == "https"
    assert [v for n, v in scope["headers"] if n == b"host"] == [b"shop.example"]


def test_apply_to_scope_without_headers_keeps_the_list() -> None:
    """Without proxy headers the scope's header list is the very same object."""
    headers = h(("host", "a"))
    scope = {"client": PEER, "scheme": "http", "headers": headers}
    apply_to_scope(scope, DEFAULT)
    assert scope["headers"] is headers and scope["client"] == PEER


# --- end to end: a real corral Server -----------------------------------------------------------


def get_json(url: str, headers: list[tuple[str, str]], **kw: Any) -> dict[str, Any]:
    with httpx.Client(**kw) as client:
        response = client.get(url, headers=headers)
    assert response.status_code == 200
    return dict(response.json())


FORMS = [
    ([("X-Forwarded-For", "198.51.100.4"), ("X-Forwarded-Proto", "https")],
     ["198.51.100.4", 0], "https", None),
    ([("X-Forwarded-For", "6.6.6.6, 198.51.100.4")], ["198.51.100.4", 0], "http", None),
    ([("Forwarded", 'for="[2001:db8::5]:4711";proto=https;host=shop.example')],
     ["2001:db8::5", 4711], "https", "shop.example"),
    ([("Forwarded", "for=192.0.2.1"), ("Forwarded", "for=203.0.113.2;proto=wss")],
     ["203.0.113.2", 0], "https", None),
]  # fmt: skip


@pytest.mark.parametrize(("loop_kind", "http_kind"), STACKS)
@pytest.mark.parametrize(("headers", "client", "scheme", "host"), FORMS)
def test_trusted_peer_every_form(
    loop_kind: str,
    http_kind: str,
    headers: list[tuple[str, str]],
    client: list[Any],
    scheme: str,
    host: str | None,
) -> None:
    """From the default trusted peer (127.0.0.1) every header form rewrites the scope."""
    with serve(loop_kind, http_kind) as running:
        report = get_json(running.url(), headers)
        port = running.port()
    assert report["client"] == client and report["scheme"] == scheme
    assert report["host"] == (host or f"127.0.0.1:{port}")


@pytest.mark.parametrize("settings", [{"forwarded_allow_ips": "10.9.8.7"},
                                      {"proxy_headers": False}])  # fmt: skip
@pytest.mark.parametrize(("headers", "client", "scheme", "host"), FORMS)
def test_untrusted_peer_or_disabled_ignored(
    settings: dict[str, Any],
    headers: list[tuple[str, str]],
    client: list[Any],
    scheme: str,
    host: str | None,
) -> None:
    """From an untrusted peer, or with --no-proxy-headers, the headers change nothing."""
    with serve("uvloop", "httptools", **settings) as running:
        report = get_json(running.url(), headers)
        port = running.port()
    assert report["client"][0] == "127.0.0.1" and report["client"][1] != 0
    assert report["scheme"] == "http" and report["host"] == f"127.0.0.1:{port}"


@pytest.mark.parametrize(("loop_kind", "http_kind"), STACKS)
def test_malformed_values_do_not_poison_the_scope(loop_kind: str, http_kind: str) -> None:
    """Garbage proxy headers from a trusted peer are ignored and the request is served."""
    bad = [("X-Forwarded-For", "1.2.3.4,,<script>"), ("X-Forwarded-Proto", "gopher"),
           ("Forwarded", 'for="unterminated;host=evil')]  # fmt: skip
    with serve(loop_kind, http_kind) as running:
        report = get_json(running.url(), bad)
    assert report["client"][0] == "127.0.0.1" and report["scheme"] == "http"


def test_access_log_shows_the_forwarded_client(caplog: pytest.LogCaptureFixture) -> None:
    """The access line names the client from X-Forwarded-For, not the proxy."""
    caplog.set_level(logging.INFO, logger="corral.access")
    with serve("asyncio", "httptools") as running:
        get_json(running.url(), [("X-Forwarded-For", "198.51.100.77")])
        lines = wait_for(lambda: [r.getMessage() for r in caplog.records
                                  if r.name == "corral.access"])  # fmt: skip
    assert lines[0].startswith('198.51.100.77:0 - "GET / HTTP/1.1" 200')


@pytest.mark.parametrize(("allow", "trusted"), [("unix", True), (None, False)])
def test_unix_socket_peer(tmp_path: Path, allow: str | None, trusted: bool) -> None:
    """Over --uds, headers count only when a Unix-socket literal is trusted."""
    path = str(tmp_path / "edge.sock")
    with serve("uvloop", "h11", port=None, uds=path, forwarded_allow_ips=allow):
        transport = httpx.HTTPTransport(uds=path)
        report = get_json("http://localhost/", [("X-Forwarded-For", "192.0.2.55")],
                          transport=transport)  # fmt: skip
    assert report["client"] == (["192.0.2.55", 0] if trusted else None)


def test_ipv6_loopback_peer_trusted_by_default() -> None:
    """On [::1] the default --forwarded-allow-ips (which includes ::1) trusts the peer."""
    if not has_ipv6():
        pytest.skip("no IPv6 loopback on this machine")
    with serve("uvloop", "httptools", port=None, bind=("[::1]:0",)) as running:
        assert running.url().startswith("http://[::1]:")
        report = get_json(running.url(), [("X-Forwarded-For", "2001:db8::77")])
    assert report["client"] == ["2001:db8::77", 0]


@pytest.mark.parametrize(("loop_kind", "http_kind"), STACKS[::3])
def test_websocket_scheme_from_proxy(loop_kind: str, http_kind: str) -> None:
    """X-Forwarded-Proto https turns a WebSocket scope's scheme into wss."""

    async def talk(port: int) -> dict[str, Any]:
        headers = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "192.0.2.9"}
        async with ws_connect(f"ws://127.0.0.1:{port}/", additional_headers=headers) as ws:
            return dict(json.loads(await ws.recv()))

    with serve(loop_kind, http_kind) as running:
        report = asyncio.run(talk(running.port()))
    assert report["scheme"] == "wss" and report["client"] == ["192.0.2.9", 0]


def has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_several_binds_served_at_once(tmp_path: Path) -> None:
    """IPv4, IPv6 and a Unix socket bound together are all served by one server."""
    binds = ["127.0.0.1:0", f"unix:{tmp_path / 'b.sock'}"]
    if has_ipv6():
        binds.append("[::1]:0")
    with serve("uvloop", "httptools", port=None, bind=tuple(binds)) as running:
        assert len(running.listeners) == len(binds)
        assert get_json(running.url(0), [])["client"][0] == "127.0.0.1"
        transport = httpx.HTTPTransport(uds=str(tmp_path / "b.sock"))
        assert get_json("http://localhost/", [], transport=transport)["client"] is None
        if has_ipv6():
            assert get_json(running.url(2), [])["client"][0] == "::1"


def test_dual_stack_host_serves_ipv4_too() -> None:
    """--host :: serves IPv6, and IPv4 where the system maps it (Linux default)."""
    if not has_ipv6():
        pytest.skip("no IPv6 loopback on this machine")
    with serve("asyncio", "h11", host="::") as running:
        port = running.port()
        assert get_json(f"http://[::1]:{port}/", [])["client"][0] == "::1"
        try:
            report = get_json(f"http://127.0.0.1:{port}/", [])
        except httpx.ConnectError:
            pytest.skip("this system does not map IPv4 onto IPv6 sockets")
    assert report["client"][0] in ("::ffff:127.0.0.1", "127.0.0.1")
