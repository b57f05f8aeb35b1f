"""Proxy headers: trusted-proxy matching and client/scheme/host resolution (pure)."""

from __future__ import annotations

import pytest
from corral.worker.proxy_headers import apply_to_scope, parse_trusted, resolve
from hypothesis import given
from hypothesis import strategies as st

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
