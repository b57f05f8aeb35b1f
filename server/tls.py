"""TLS: the server's SSLContext from the ``--ssl-*`` settings, and the ASGI TLS extension.

:func:`create_ssl_context` reads the certificate files every time it is called. Workers call
it after fork, so a reload (new workers) picks up renewed certificates; nothing caches a
context across processes.

:func:`tls_extension` builds ``scope["extensions"]["tls"]`` as the ASGI TLS extension
defines it, once per connection.
"""

from __future__ import annotations

import os
import ssl
import sys
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from corral.errors import ConfigError

if TYPE_CHECKING:
    from corral.config import Config

#: TLS protocol version names (as ``SSLObject.version()`` reports them) to their wire numbers.
TLS_VERSIONS = {"SSLv3": 0x0300, "TLSv1": 0x0301, "TLSv1.1": 0x0302, "TLSv1.2": 0x0303,
                "TLSv1.3": 0x0304}  # fmt: skip

# RFC 4514 section 3: the attribute types with a string form; others keep their long name.
_RFC4514_KEYS = {
    "commonName": "CN",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}
_RFC4514_SPECIAL = frozenset('",+;<>\\')
_PEM_BEGIN = "-----BEGIN CERTIFICATE-----"
_PEM_END = "-----END CERTIFICATE-----"


@dataclass(frozen=True, slots=True)
class _ContextInfo:
    """What the TLS extension needs from a context, computed once when it is built."""

    server_cert: str | None
    cipher_ids: dict[str, int]


_ContextMap = weakref.WeakKeyDictionary[ssl.SSLContext, _ContextInfo]
_CONTEXT_INFO: _ContextMap = weakref.WeakKeyDictionary()


def tls_enabled(config: Config) -> bool:
    """True when the listeners speak TLS (a certificate file or a context factory)."""
    return bool(config.ssl_certfile or config.ssl_context_factory)


def create_ssl_context(config: Config) -> ssl.SSLContext | None:
    """Build a fresh server SSLContext, or None when TLS is off.

    With ``ssl_context_factory`` the factory builds it (as in uvicorn), getting a
    zero-argument default factory that builds the ``--ssl-*`` context. Either way corral
    offers only ``http/1.1`` by ALPN, since that is all it speaks.
    Raises ConfigError naming the option when a file, password, version or cipher string
    is unusable, or the factory returns something else, so a bad setting is a short
    message and exit code 2.
    """
    factory = config.ssl_context_factory
    if factory is None:
        return _from_settings(config) if config.ssl_certfile else None
    context = factory(config, lambda: _from_settings(config))
    if not isinstance(context, ssl.SSLContext):
        problem = f"must return an ssl.SSLContext, got {type(context).__name__}"
        raise ConfigError("ssl_context_factory", problem)
    context.set_alpn_protocols(["http/1.1"])
    if context not in _CONTEXT_INFO:
        _CONTEXT_INFO[context] = _ContextInfo(
            server_cert=_first_pem_certificate(config.ssl_certfile)
            if config.ssl_certfile
            else None,
            cipher_ids=_cipher_ids(context),
        )
    return context


def _from_settings(config: Config) -> ssl.SSLContext:
    """The context the ``--ssl-*`` settings describe."""
    if not config.ssl_certfile:
        raise ConfigError("--ssl-certfile", "the default SSL context needs a certificate file")
    try:
        context = ssl.SSLContext(config.ssl_version)
    except (ValueError, OSError) as exc:
        raise ConfigError("--ssl-version", f"{config.ssl_version}: {exc}") from None
    for option, path in (
        ("--ssl-certfile", config.ssl_certfile),
        ("--ssl-keyfile", config.ssl_keyfile),
        ("--ssl-ca-certs", config.ssl_ca_certs),
    ):
        if path and not os.access(path, os.R_OK):
            raise ConfigError(option, f"cannot read {path}")
    key_path = config.ssl_keyfile or config.ssl_certfile
    try:
        # A callable, not None: without a password OpenSSL would prompt on the terminal.
        context.load_cert_chain(config.ssl_certfile, config.ssl_keyfile, password=_password(config))
    except (ssl.SSLError, OSError) as exc:
        if _is_encrypted(key_path):
            if config.ssl_keyfile_password is None:
                raise ConfigError("--ssl-keyfile-password", "the key is encrypted") from None
            raise ConfigError("--ssl-keyfile-password", "does not decrypt the key") from None
        message = f"cannot load the certificate and key ({exc})"
        raise ConfigError("--ssl-certfile", message) from None
    if config.ssl_cert_reqs not in (ssl.CERT_NONE, ssl.CERT_OPTIONAL, ssl.CERT_REQUIRED):
        raise ConfigError("--ssl-cert-reqs", "must be 0 (none), 1 (optional) or 2 (required)")
    if config.ssl_cert_reqs != ssl.CERT_NONE and not config.ssl_ca_certs:
        raise ConfigError("--ssl-cert-reqs", "requires --ssl-ca-certs to verify client certs")
    context.verify_mode = ssl.VerifyMode(config.ssl_cert_reqs)
    if config.ssl_ca_certs:
        try:
            context.load_verify_locations(config.ssl_ca_certs)
        except (ssl.SSLError, OSError) as exc:
            message = f"cannot load {config.ssl_ca_certs}: {exc}"
            raise ConfigError("--ssl-ca-certs", message) from None
    if config.ssl_ciphers:
        try:
            context.set_ciphers(config.ssl_ciphers)
        except ssl.SSLError:
            message = f"no usable cipher in {config.ssl_ciphers!r}"
            raise ConfigError("--ssl-ciphers", message) from None
    context.set_alpn_protocols(["http/1.1"])
    _CONTEXT_INFO[context] = _ContextInfo(
        server_cert=_first_pem_certificate(config.ssl_certfile),
        cipher_ids=_cipher_ids(context),
    )
    return context


def _cipher_ids(context: ssl.SSLContext) -> dict[str, int]:
    return {c["name"]: c["id"] & 0xFFFF for c in context.get_ciphers()}


def _password(config: Config) -> Callable[[], str]:
    password = config.ssl_keyfile_password or ""
    return lambda: password


def _is_encrypted(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return b"ENCRYPTED" in f.read(1 << 20)
    except OSError:
        return False


def _first_pem_certificate(path: str) -> str | None:
    """The first certificate of the PEM file, normalised; None if it cannot be read."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    start = text.find(_PEM_BEGIN)
    end = text.find(_PEM_END, start)
    if start < 0 or end < 0:
        return None
    try:
        der = ssl.PEM_cert_to_DER_cert(text[start : end + len(_PEM_END)])
    except ValueError:
        return None
    return ssl.DER_cert_to_PEM_cert(der)


def tls_extension(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> dict[str, Any]:
    """The ASGI ``tls`` extension for a connection whose handshake has completed."""
    info = _CONTEXT_INFO.get(ssl_object.context)
    chain = _client_chain(ssl_object)
    cipher = ssl_object.cipher()
    version = ssl_object.version()
    return {
        "server_cert": info.server_cert if info else None,
        "client_cert_chain": chain,
        "client_cert_name": _client_name(ssl_object) if chain else None,
        # A client certificate that fails verification fails the handshake, so once we are
        # here there is never an error to report.
        "client_cert_error": None,
        "tls_version": TLS_VERSIONS.get(version) if version else None,
        "cipher_suite": info.cipher_ids.get(cipher[0]) if info and cipher else None,
    }


def _client_chain(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> list[str]:
    """PEM certificates sent by the client, leaf first: the whole chain on Python 3.13+."""
    if sys.version_info >= (3, 13) and ssl_object.context.verify_mode != ssl.CERT_NONE:
        getter = getattr(ssl_object, "get_verified_chain", None)
        if getter is not None:
            ders: list[bytes] = list(getter() or [])
            if ders:
                return [ssl.DER_cert_to_PEM_cert(der) for der in ders]
    leaf = ssl_object.getpeercert(binary_form=True)
    return [ssl.DER_cert_to_PEM_cert(leaf)] if leaf else []


def _client_name(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> str | None:
    cert = ssl_object.getpeercert()
    if not cert:
        return None
    subject: Any = cert.get("subject")
    return rfc4514_name(subject) if isinstance(subject, tuple) else None


def rfc4514_name(subject: tuple[tuple[tuple[str, str], ...], ...]) -> str:
    """RFC 4514 string of a subject in ``getpeercert()`` form (RDNs most specific first)."""
    rdns = []
    for rdn in reversed(subject):
        rdns.append(
            "+".join(f"{_RFC4514_KEYS.get(key, key)}={_escape(value)}" for key, value in rdn)
        )
    return ",".join(rdns)


def _escape(value: str) -> str:
    out = []
    for index, char in enumerate(value):
        if char in _RFC4514_SPECIAL:
            out.append("\\" + char)
        elif char == "\0":
            out.append("\\00")
        elif (char == " " and index in (0, len(value) - 1)) or (char == "#" and index == 0):
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)
