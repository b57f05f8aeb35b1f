"""Applying a user's --log-config, including configs written for uvicorn.

A config written for uvicorn names the loggers ``uvicorn``, ``uvicorn.error``,
``uvicorn.access`` and ``uvicorn.asgi`` and the formatter classes
``uvicorn.logging.DefaultFormatter`` and ``AccessFormatter``. Before the config is applied
those names are mapped to corral's (``corral.error``, ``corral.logging.DefaultFormatter``,
...), which print the same lines, so such a config works unchanged and no ``uvicorn``
module is needed. A config that configures none of corral's loggers, under either name,
gets one warning.
"""

from __future__ import annotations

import configparser
import json
import logging
import logging.config
import os
from typing import Any

import yaml
from corral.errors import ConfigError

logger = logging.getLogger("corral.error")

#: uvicorn's logger names and the corral loggers that carry the same lines.
LOGGER_ALIASES = {
    "uvicorn": "corral",
    "uvicorn.error": "corral.error",
    "uvicorn.access": "corral.access",
    "uvicorn.asgi": "corral.asgi",
}

#: uvicorn's formatter classes and the corral classes that format the same way.
FORMATTER_ALIASES = {
    "uvicorn.logging.DefaultFormatter": "corral.logging.DefaultFormatter",
    "uvicorn.logging.AccessFormatter": "corral.logging.AccessFormatter",
    "uvicorn.logging.ColourizedFormatter": "corral.logging.LevelPrefixFormatter",
}

_CORRAL_NAMES = frozenset(LOGGER_ALIASES.values())


def apply_log_config(source: str | dict[str, Any]) -> None:
    """Apply a user logging configuration: a dict, or a .json/.yaml/.yml/.ini/.cfg file."""
    if isinstance(source, dict):
        _dict_config(source, "log_config")
        return
    path = str(source)
    if not os.path.isfile(path):
        raise ConfigError("--log-config", f"no such file: {path}")
    suffix = os.path.splitext(path)[1].lower()
    if suffix in (".json", ".yaml", ".yml"):
        try:
            with open(path, encoding="utf-8") as handle:
                loaded = json.load(handle) if suffix == ".json" else yaml.safe_load(handle)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise ConfigError("--log-config", f"cannot read {path}: {exc}") from None
        _dict_config(loaded, path)
    else:
        _file_config(path)  # .ini, .cfg and anything else, as uvicorn does


def map_uvicorn_names(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of a dictConfig mapping with uvicorn's logger and formatter names made corral's.

    A uvicorn logger whose corral name the config also configures is left as it is: the
    corral entry is the one meant for corral.
    """
    mapped = dict(config)
    loggers = config.get("loggers")
    if isinstance(loggers, dict):
        mapped["loggers"] = {
            _logger_name(name, loggers): settings for name, settings in loggers.items()
        }
    formatters = config.get("formatters")
    if isinstance(formatters, dict):
        mapped["formatters"] = {name: _formatter(settings) for name, settings in formatters.items()}
    return mapped


def _logger_name(name: str, configured: Any) -> str:
    alias = LOGGER_ALIASES.get(name)
    return name if alias is None or alias in configured else alias


def _formatter(settings: Any) -> Any:
    if not isinstance(settings, dict):
        return settings
    out = dict(settings)
    for key in ("()", "class"):
        value = out.get(key)
        if isinstance(value, str) and value in FORMATTER_ALIASES:
            out[key] = FORMATTER_ALIASES[value]
    return out


def _dict_config(loaded: Any, where: str) -> None:
    if not isinstance(loaded, dict):
        raise ConfigError("--log-config", "must be a logging dictConfig mapping")
    mapped = map_uvicorn_names(loaded)
    try:
        logging.config.dictConfig(mapped)
    except (ValueError, TypeError, AttributeError, ImportError) as exc:
        raise ConfigError("--log-config", f"invalid logging configuration: {exc}") from None
    loggers = mapped.get("loggers")
    _warn_unless_configured(where, loggers if isinstance(loggers, dict) else {})


def _file_config(path: str) -> None:
    """fileConfig, after mapping uvicorn's names in ``qualname=`` and ``class=`` lines."""
    parser = configparser.ConfigParser()
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise ConfigError("--log-config", f"cannot read {path}: {exc}") from None
    loggers = [s for s in parser.sections() if s.startswith("logger_") and s != "logger_root"]
    names = {parser.get(s, "qualname", fallback="") for s in loggers}
    for section in loggers:
        name = parser.get(section, "qualname", fallback="")
        parser.set(section, "qualname", _logger_name(name, names))
    for section in parser.sections():
        if section.startswith("formatter_"):
            value = parser.get(section, "class", fallback="")
            if value in FORMATTER_ALIASES:
                parser.set(section, "class", FORMATTER_ALIASES[value])
    try:
        logging.config.fileConfig(parser, disable_existing_loggers=False)
    except Exception as exc:
        raise ConfigError("--log-config", f"cannot apply {path}: {exc}") from None
    _warn_unless_configured(path, {parser.get(s, "qualname", fallback="") for s in loggers})


def _warn_unless_configured(where: str, loggers: Any) -> None:
    if _CORRAL_NAMES.isdisjoint(loggers):
        logger.warning(
            "%s configures none of corral's loggers (corral, corral.error, corral.access,"
            " or uvicorn's names for them); their lines go to the root logger's handlers",
            where,
        )
