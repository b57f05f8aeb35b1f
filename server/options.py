"""How a setting is declared: the :class:`Option` metadata a Config field carries, and checks.

:mod:`corral.config` declares every setting with :func:`setting`; the CLI, the environment
variables and the programmatic API read the :class:`Option` back through
:func:`declared_options`. Value checks are small functions returning a problem or None, so
one error path (:func:`check_options`) names the flag in every refusal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Literal

from corral.errors import ConfigError

Check = Callable[[Any], str | None]


@dataclass(frozen=True)
class Option:
    """How one Config field appears on the command line and in the environment."""

    flags: tuple[str, ...]
    help: str
    kind: Literal[
        "str", "int", "float", "bool", "flag", "choice", "multiple", "octal", "auto_int", "size"
    ] = "str"
    choices: tuple[str, ...] = ()
    #: Extra environment variables consulted after CORRAL_* and UVICORN_* (PaaS conventions).
    fallback_env: tuple[str, ...] = ()
    check: Check | None = None
    metavar: str | None = None
    #: Accepted on the CLI but hidden from --help (gunicorn-compatible spellings).
    hidden_aliases: tuple[str, ...] = ()
    #: (value, why) for choices uvicorn offers and corral does not: kept out of --help and
    #: the choice list, but typing one gets its reason instead of "not one of ...".
    refused: tuple[tuple[str, str], ...] = ()


def setting(default: Any, *flags: str, help: str, **kw: Any) -> Any:
    """A dataclass field carrying its :class:`Option` metadata."""
    option = Option(flags=flags, help=help, **kw)
    if isinstance(default, list | dict):
        raise TypeError("mutable defaults are not allowed")
    return field(default=default, metadata={"option": option})


def declared_options(cls: type) -> list[tuple[str, Option, Any]]:
    """(field name, option, default) for every field of ``cls`` that has command-line flags."""
    out = []
    for f in fields(cls):
        option: Option | None = f.metadata.get("option")
        if option is not None and option.flags:
            default = None if f.default is MISSING else f.default
            out.append((f.name, option, default))
    return out


def check_options(instance: Any) -> None:
    """Run every field's choice list and check.

    Raises :class:`~corral.errors.ConfigError` naming the field's first flag.
    """
    for f in fields(instance):
        option: Option | None = f.metadata.get("option")
        if option is None or not option.flags:
            continue
        value = getattr(instance, f.name)
        flag = option.flags[0].split("/")[0]
        if option.kind == "choice" and value is not None:
            text = str(value).lower() if isinstance(value, bool) else str(value)
            for refused, why in option.refused:
                if text == refused:
                    raise ConfigError(flag, why)
            if text not in option.choices:
                raise ConfigError(flag, f"{value!r} is not one of {', '.join(option.choices)}")
        if option.check is not None:
            problem = option.check(value)
            if problem:
                raise ConfigError(flag, problem)


# --- checks ------------------------------------------------------------------------------
def non_negative(value: Any) -> str | None:
    return None if value is None or value >= 0 else "must be zero or more"


def positive(value: Any) -> str | None:
    if isinstance(value, str):  # 'auto' or a size reached Config unresolved (a bug)
        return f"{value!r} was not resolved to a number"
    return None if value is None or value > 0 else "must be greater than zero"


def port_number(value: Any) -> str | None:
    return None if value is None or 0 <= value <= 65535 else "must be between 0 and 65535"


def header_pairs(value: Any) -> str | None:
    for item in value:
        if not (isinstance(item, tuple) and len(item) == 2 and item[0]):
            return f"{item!r} is not NAME:VALUE"
        name, val = item
        if any(c in name + val for c in "\r\n\0") or any(c in name for c in " \t:"):
            return f"{name!r} has characters not allowed in a header"
    return None


def split_header(text: str) -> tuple[str, str] | None:
    """``NAME:VALUE`` as a (name, value) pair, whitespace around either dropped; None if
    it is not of that form."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        return None
    return name.strip(), value.strip()


def url_path(value: Any) -> str | None:
    return None if value is None or str(value).startswith("/") else "must start with '/'"
