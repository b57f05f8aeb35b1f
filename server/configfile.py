"""Settings from a TOML file: ``--config corral.toml``, or ``[tool.corral]`` of a pyproject.toml.

The keys are :class:`~corral.config.Config`'s field names (``workers = 4``,
``bind = ["0.0.0.0:8000"]``), read through the same :class:`~corral.options.Option`
declarations as the CLI and the environment, so a file can set exactly what a flag can and
a value is checked by the same rules. Errors name the key, the file and its line.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.config import Config, Option, options
from corral.errors import ConfigError
from corral.options import split_header
from corral.sizing import size_problem

#: Keys that are not flags but may be set in a file.
_APP_KEY = "app"


@dataclass(frozen=True)
class FileSettings:
    """What a config file sets, as Config keyword arguments."""

    path: str
    values: dict[str, Any]


def _table(path: Path, data: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The settings table, and the TOML table header it sits under (None: the top level)."""
    if path.name == "pyproject.toml":
        table = data.get("tool", {}).get("corral")
        if not isinstance(table, dict):
            raise ConfigError("--config", f"{path} has no [tool.corral] table")
        return table, "tool.corral"
    return data, None


def line_of(text: str, key: str, table: str | None) -> int | None:
    """The 1-based line where ``key`` is assigned in ``table`` (tomllib keeps no positions)."""
    current: str | None = None
    assignment = re.compile(rf"""\s*(["']?){re.escape(key)}\1\s*=""")
    for number, line in enumerate(text.splitlines(), 1):
        header = re.match(r"\s*\[([^\[\]]+)\]\s*(#.*)?$", line)
        if header:
            current = header.group(1).strip()
        elif current == table and assignment.match(line):
            return number
    return None


def _convert(key: str, value: Any, option: Option) -> Any:
    """``value`` as the CLI would have produced it, or a description of what was expected."""
    kind = option.kind
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if kind in ("flag", "bool"):
        if isinstance(value, bool):
            return value
        raise ValueError("expects true or false")
    if kind == "int":
        if is_int:
            return value
        raise ValueError("expects a whole number")
    if kind == "float":
        if is_int or isinstance(value, float):
            return float(value)
        raise ValueError("expects a number")
    if kind == "auto_int":
        if is_int or value == "auto":
            return value
        raise ValueError('expects a whole number or "auto"')
    if kind == "size":
        problem = size_problem(value) if is_int or isinstance(value, str) else "must be MiB"
        if problem:
            raise ValueError(problem)
        return value
    if kind == "octal":
        if is_int:
            return value
        if isinstance(value, str):
            return int(value, 8)
        raise ValueError('expects an octal string such as "027"')
    if kind == "multiple":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise ValueError("expects a list of strings")
        if key == "headers":
            pairs = [split_header(item) for item in items]
            if None in pairs:
                raise ValueError('expects strings such as "X-Frame-Options: DENY"')
            return tuple(pairs)
        return tuple(items)
    if kind == "choice":
        text = str(value).lower() if isinstance(value, bool) else value
        if not isinstance(text, str):
            raise ValueError(f"expects one of {', '.join(option.choices)}")
        if text not in option.choices:
            reasons = dict(option.refused)
            raise ValueError(reasons.get(text, f"expects one of {', '.join(option.choices)}"))
        return value
    if key == "log_config" and isinstance(value, dict):
        return value  # a dictConfig table inline
    if isinstance(value, str):
        return value
    raise ValueError("expects a string")


def read(path_text: str) -> FileSettings:
    """Read and check the settings ``path_text`` holds; raises ConfigError naming the key."""
    path = Path(path_text)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("--config", f"cannot read {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--config", f"{path} is not valid TOML: {exc}") from None
    table, header = _table(path, data)
    declared = {name: option for name, option, _default in options()}
    values: dict[str, Any] = {}
    for raw_key, value in table.items():
        key = raw_key.replace("-", "_")
        line = line_of(text, raw_key, header)
        where = f"{path}, line {line}" if line else str(path)
        if key == _APP_KEY:
            if not isinstance(value, str):
                raise ConfigError("--config", f"{where}: 'app' expects a \"module:attribute\"")
            values[key] = value
            continue
        option = declared.get(key)
        if option is None or key == "config":
            import difflib  # only for a mistyped key: a worker never needs it

            close = difflib.get_close_matches(key, [*declared, _APP_KEY], n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError("--config", f"{where}: unknown setting '{raw_key}'{hint}")
        try:
            converted = _convert(key, value, option)
        except ValueError as exc:
            raise ConfigError("--config", f"{where}: '{raw_key}' {exc}, got {value!r}") from None
        unresolved = option.kind in ("auto_int", "size") and isinstance(converted, str)
        problem = None if unresolved or option.check is None else option.check(converted)
        if problem:
            raise ConfigError("--config", f"{where}: '{raw_key}' {problem}")
        values[key] = converted
    return FileSettings(str(path), values)


def _toml_value(value: Any) -> str | None:
    """``value`` as a TOML value; None for what TOML cannot say (an app object, a dict)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic strings
    if isinstance(value, tuple):
        items = [f"{v[0]}: {v[1]}" if isinstance(v, tuple) else v for v in value]
        return "[" + ", ".join(json.dumps(item) for item in items) + "]"
    return None


def render(config: Config, sources: dict[str, str]) -> str:
    """The effective settings as TOML, each line saying where its value came from."""
    lines = []
    for name in [_APP_KEY, *(name for name, _option, _default in options())]:
        value = getattr(config, name)
        source = sources.get(name, "default")
        text = _toml_value(value)
        if name == "config":
            lines.append(f"# read from {value}  ({source})" if value else "# no --config file")
        elif value is None:
            lines.append(f"# {name} is not set  ({source})")
        elif text is None:
            lines.append(f"# {name} = {value!r}  ({source}; not expressible in TOML)")
        else:
            lines.append(f"{name} = {text}  # {source}")
    return "\n".join(lines) + "\n"
