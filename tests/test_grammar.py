"""The one definition of an RFC 9110 token, checked byte by byte against the RFC's list."""

from __future__ import annotations

import string

from corral.grammar import TOKEN

#: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" / "|"
#:         / "~" / DIGIT / ALPHA   (RFC 9110 §5.6.2)
RFC_TCHARS = set(b"!#$%&'*+-.^_`|~" + (string.digits + string.ascii_letters).encode())


def test_token_is_exactly_the_rfc_tchar_set() -> None:
    accepted = {byte for byte in range(256) if TOKEN.fullmatch(bytes([byte]))}
    assert accepted == RFC_TCHARS


def test_token_is_never_empty() -> None:
    assert TOKEN.fullmatch(b"") is None
    assert TOKEN.fullmatch(b"x-custom-header") is not None
