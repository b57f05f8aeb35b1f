"""Proxy headers: who the client really is, behind trusted reverse proxies.

Pure functions, no I/O. :func:`parse_trusted` turns ``--forwarded-allow-ips`` into a
:class:`TrustedProxies` matcher once per process; :func:`resolve` is called once per request
with the peer address, the connection's scheme and the request headers, and returns the
client, scheme and (from RFC 7239 ``Forwarded``) host the scope should carry.

Rules:

* Headers are honoured only when the direct peer is trusted. A Unix-socket peer (client
  ``None``) is trusted by ``*`` or by a literal naming a Unix socket: ``unix``, ``unix:PATH``
  or an absolute ``/PATH``.
* The client is the right-most untrusted hop: proxies append, so everything right of the
  first untrusted hop was written by proxies we trust, and anything left of it may be forged
  by the client. When every hop is trusted the left-most one is the client.
* ``X-Forwarded-For`` / ``X-Forwarded-Proto`` win over ``Forwarded`` field by field. Nearly
  every proxy (nginx, Caddy, Envoy, Traefik, cloud load balancers) sets the X- headers and
  passes an unknown ``Forwarded`` header through untouched, so preferring ``Forwarded`` would
  let clients behind such a proxy spoof their address.
* ``unknown`` and obfuscated identifiers (``_secret``) from RFC 7239 are opaque: such a hop
  counts as untrusted (unless listed as a literal) and becomes the client host as is, with
  port 0. Anything malformed makes the whole header ignored; nothing here raises on input.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from typing import Any

Client = tuple[str, int] | None
Headers = Sequence[tuple[bytes, bytes]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Literals that make Unix-socket peers trusted (besides absolute paths and ``unix:PATH``).
UNIX_LITERAL = "unix"

_HEADER_NAMES = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"forwarded"})
_SECURE = frozenset({"https", "wss"})
_PROTOS = frozenset({"http", "https", "ws", "wss"})
# RFC 7239 section 6.3: an obfuscated node is "_" followed by ALPHA / DIGIT / "." / "_" / "-".
_OBFUSCATED = re.compile(r"_[A-Za-z0-9._-]+")
# A Host value: reg-name, IPv4 or [IPv6], optional port. Deliberately narrow: a host that
# does not match is dropped rather than passed to the app.
_HOST = re.compile(r"[A-Za-z0-9._~-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
_LOOKS_NUMERIC = re.compile(r"[0-9A-Fa-f.:/]+")
# Peers are usually a handful of proxies; the cache only avoids re-parsing their addresses.
_PEER_CACHE_SIZE = 256
_MAX_HOST_LENGTH = 255


class TrustedProxies:
    """Which peers and hops are trusted: IPs, CIDR networks, ``*`` and literals."""

    __slots__ = ("_peer_cache", "addresses", "literals", "networks", "trust_all", "trust_unix")

    def __init__(
        self,
        *,
        trust_all: bool = False,
        addresses: frozenset[IPAddress] = frozenset(),
        networks: tuple[IPNetwork, ...] = (),
        literals: frozenset[str] = frozenset(),
    ) -> None:
        self.trust_all = trust_all
        self.addresses = addresses
        self.networks = networks
        self.literals = literals
        self.trust_unix = trust_all or any(_names_unix_socket(lit) for lit in literals)
        self._peer_cache: dict[str, bool] = {}

    def trusts_peer(self, client: Client) -> bool:
        """Whether the directly connected peer may set proxy headers (None = Unix socket)."""
        if client is None:
            return self.trust_unix
        if self.trust_all:
            return True
        host = client[0]
        cached = self._peer_cache.get(host)
        if cached is None:
            if len(self._peer_cache) >= _PEER_CACHE_SIZE:
                self._peer_cache.clear()
            cached = self._peer_cache[host] = self.trusts_host(host)
        return cached

    def trusts_host(self, host: str) -> bool:
        """Whether one hop (an IP text, ``unknown`` or an obfuscated name) is trusted."""
        if self.trust_all:
            return True
        ip = _ip(host)
        if ip is None:
            return host in self.literals
        return self.trusts_ip(ip)

    def trusts_ip(self, ip: IPAddress) -> bool:
        if self.trust_all or ip in self.addresses:
            return True
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        if mapped is not None and self.trusts_ip(mapped):
            return True
        return any(ip.version == net.version and ip in net for net in self.networks)


def _names_unix_socket(literal: str) -> bool:
    return literal == UNIX_LITERAL or literal.startswith(("unix:", "/"))


def parse_trusted(specs: Iterable[str]) -> TrustedProxies:
    """Parse ``--forwarded-allow-ips`` items once; raises ValueError for a broken IP/CIDR.

    Items that look like addresses or networks but do not parse (``10.0.0.300``,
    ``10.0.0.0/33``) are errors rather than literals, because as literals they would silently
    never match anything.
    """
    addresses: set[IPAddress] = set()
    networks: list[IPNetwork] = []
    literals: set[str] = set()
    trust_all = False
    for raw in specs:
        spec = raw.strip()
        if not spec:
            continue
        if spec == "*":
            trust_all = True
        elif _names_unix_socket(spec):
            literals.add(spec)
        elif "/" in spec:
            try:
                networks.append(ipaddress.ip_network(spec, strict=False))
            except ValueError:
                raise ValueError(f"{spec!r} is not a valid IP network") from None
        else:
            ip = _ip(spec)
            if ip is not None:
                addresses.add(ip)
            elif _LOOKS_NUMERIC.fullmatch(spec) and any(c in spec for c in ".:"):
                raise ValueError(f"{spec!r} is not a valid IP address")
            else:
                literals.add(spec)
    return TrustedProxies(
        trust_all=trust_all,
        addresses=frozenset(addresses),
        networks=tuple(networks),
        literals=frozenset(literals),
    )


def _ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _node(text: str) -> tuple[str, int] | None:
    """One hop: ``IP``, ``IPv4:port``, ``[IPv6]`` or ``[IPv6]:port``, ``unknown``, ``_name``.

    Returns (host, port) with port 0 when absent or obfuscated, None when malformed.
    """
    if not text:
        return None
    if text[0] == "[":
        end = text.find("]")
        if end < 0:
            return None
        host, rest = text[1:end], text[end + 1 :]
        if not isinstance(_ip(host), ipaddress.IPv6Address):
            return None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        rest = ":" + port_text
        if not isinstance(_ip(host), ipaddress.IPv4Address) and not _opaque(host):
            return None
    else:
        if _ip(text) is not None or _opaque(text):
            return text, 0
        return None
    if not rest:
        return host, 0
    port_text = rest[1:]
    if rest[0] != ":" or not port_text:
        return None
    if port_text.isascii() and port_text.isdigit() and len(port_text) <= 5:
        port = int(port_text)
        return (host, port) if port <= 65535 else None
    # RFC 7239 allows obfuscated ports ("_abc"); they carry no number.
    return (host, 0) if _OBFUSCATED.fullmatch(port_text) else None


def _opaque(text: str) -> bool:
    return text == "unknown" or _OBFUSCATED.fullmatch(text) is not None


def _pick_hop(hops: Sequence[tuple[str, int]], trusted: TrustedProxies) -> int:
    """Index of the right-most untrusted hop, or 0 when all are trusted."""
    for index in range(len(hops) - 1, -1, -1):
        if not trusted.trusts_host(hops[index][0]):
            return index
    return 0


def _forwarded_for(value: str) -> list[tuple[str, int]] | None:
    hops = []
    for item in value.split(","):
        node = _node(item.strip())
        if node is None:
            return None
        hops.append(node)
    return hops


def _parse_forwarded(value: str) -> list[dict[str, str]] | None:
    """RFC 7239 elements as dicts (parameter names lower-cased); None when malformed."""
    elements: list[dict[str, str]] = []
    current: dict[str, str] = {}
    i, n = 0, len(value)
    while True:
        while i < n and value[i] in " \t":
            i += 1
        if i >= n:
            break
        eq = value.find("=", i)
        if eq < 0:
            return None
        name = value[i:eq].lower()
        if not name or not name.isascii() or any(c in name for c in ' \t",;'):
            return None
        i = eq + 1
        if i < n and value[i] == '"':
            chars = []
            i += 1
            while i < n and value[i] != '"':
                if value[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(value[i])
                i += 1
            if i >= n:
                return None  # unterminated quoted string
            i += 1
            val = "".join(chars)
        else:
            start = i
            while i < n and value[i] not in ",; \t":
                i += 1
            val = value[start:i]
        if name in current:
            return None  # RFC 7239: a parameter must not occur twice in one element
        current[name] = val
        while i < n and value[i] in " \t":
            i += 1
        if i < n and value[i] == ";":
            i += 1
        elif i < n and value[i] == ",":
            elements.append(current)
            current = {}
            i += 1
        elif i < n:
            return None
    if current:
        elements.append(current)
    return elements or None


def _scheme(proto: str, current: str) -> str | None:
    """Map a forwarded proto onto the scope's family (http/https or ws/wss)."""
    proto = proto.strip().lower()
    if proto not in _PROTOS:
        return None
    secure = proto in _SECURE
    if current in ("ws", "wss"):
        return "wss" if secure else "ws"
    return "https" if secure else "http"


def resolve(
    client: Client, scheme: str, headers: Headers, trusted: TrustedProxies
) -> tuple[Client, str, str | None]:
    """Return (client, scheme, host) for the scope; host is None unless ``Forwarded`` set it.

    ``headers`` are the request's (lower-case name, value) pairs. Without proxy headers this
    is a single pass of byte comparisons and returns its inputs.
    """
    for name, _ in headers:
        if name in _HEADER_NAMES:
            break
    else:
        return client, scheme, None  # the common case: one set lookup per header
    xff: list[bytes] = []
    xfp: list[bytes] = []
    fwd: list[bytes] = []
    for name, value in headers:
        if name == b"x-forwarded-for":
            xff.append(value)
        elif name == b"x-forwarded-proto":
            xfp.append(value)
        elif name == b"forwarded":
            fwd.append(value)
    if not (xff or xfp or fwd) or not trusted.trusts_peer(client):
        return client, scheme, None

    host: str | None = None
    hop_from_right: int | None = None
    new_client = client
    if xff:
        hops = _forwarded_for(b",".join(xff).decode("latin-1"))
        if hops:
            index = _pick_hop(hops, trusted)
            new_client = hops[index]
            hop_from_right = len(hops) - 1 - index
    if xfp:
        protos = b",".join(xfp).decode("latin-1").split(",")
        k = hop_from_right if hop_from_right is not None else 0
        chosen = protos[-1 - k] if k < len(protos) else protos[-1]
        scheme = _scheme(chosen, scheme) or scheme
    if fwd:
        elements = _parse_forwarded(b",".join(fwd).decode("latin-1"))
        if elements is not None:
            new_client, scheme, host = _apply_forwarded(
                elements, new_client, scheme, trusted, use_for=not xff, use_proto=not xfp
            )
    return new_client, scheme, host


def _apply_forwarded(
    elements: list[dict[str, str]],
    client: Client,
    scheme: str,
    trusted: TrustedProxies,
    *,
    use_for: bool,
    use_proto: bool,
) -> tuple[Client, str, str | None]:
    """Apply the ``Forwarded`` element describing the client's hop."""
    index = len(elements) - 1
    hops: list[tuple[str, int]] = []
    if all("for" in element for element in elements):
        for element in elements:
            node = _node(element["for"])
            if node is None:
                hops = []
                break
            hops.append(node)
    if hops:
        index = _pick_hop(hops, trusted)
        if use_for:
            client = hops[index]
    element = elements[index]
    if use_proto and "proto" in element:
        scheme = _scheme(element["proto"], scheme) or scheme
    host = element.get("host")
    if host is not None and (len(host) > _MAX_HOST_LENGTH or not _HOST.fullmatch(host)):
        host = None
    return client, scheme, host


def apply_to_scope(scope: dict[str, Any], trusted: TrustedProxies) -> None:
    """Rewrite an HTTP scope's ``client``, ``scheme`` and Host header from proxy headers.

    The Host header is only rebuilt when ``Forwarded`` named a host, the rare case; without
    proxy headers nothing is allocated.
    """
    headers = scope["headers"]
    client, scheme, host = resolve(scope["client"], scope["scheme"], headers, trusted)
    scope["client"] = client
    scope["scheme"] = scheme
    if host is not None:
        encoded = host.encode("ascii")
        scope["headers"] = [(b"host", encoded)] + [(n, v) for n, v in headers if n != b"host"]
