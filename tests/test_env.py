"""Environment: CORRAL_* / UVICORN_* / PaaS variables and their precedence, and --env-file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import corral.cli
import pytest
from click.testing import CliRunner
from corral.config import Config, options
from corral.errors import ConfigError
from corral.main import load_env_file

#: Variables these tests set; cleared first so the developer's own environment can't leak in.
TOUCHED = (
    "CORRAL_PORT",
    "UVICORN_PORT",
    "PORT",
    "CORRAL_WORKERS",
    "UVICORN_WORKERS",
    "WEB_CONCURRENCY",
    "CORRAL_FORWARDED_ALLOW_IPS",
    "UVICORN_FORWARDED_ALLOW_IPS",
    "FORWARDED_ALLOW_IPS",
    "CORRAL_APP",
    "UVICORN_APP",
)


@pytest.fixture
def invoke(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Run the CLI with an environment; returns (result, Config or None), serving nothing."""
    seen: list[Config] = []

    def fake_serve(config: Config) -> int:
        seen.append(config)
        return 0

    monkeypatch.setattr(corral.cli, "serve", fake_serve)
    for name in TOUCHED:
        monkeypatch.delenv(name, raising=False)

    def run(args: list[str], env: dict[str, str] | None = None) -> tuple[Any, Config | None]:
        seen.clear()
        result = CliRunner().invoke(corral.cli.cli, args, env=env or {})
        return result, (seen[0] if seen else None)

    yield run


PRECEDENCE = [
    # (command line, CORRAL_*, UVICORN_*, PaaS fallback, expected)
    ("1", "2", "3", "4", 1),
    (None, "2", "3", "4", 2),
    (None, None, "3", "4", 3),
    (None, None, None, "4", 4),
    (None, None, None, None, None),
]


@pytest.mark.smoke
@pytest.mark.parametrize(("option", "paas_var"), [("workers", "WEB_CONCURRENCY"), ("port", "PORT")])
@pytest.mark.parametrize(("cli", "corral_env", "uvicorn_env", "paas", "expected"), PRECEDENCE)
def test_precedence(
    invoke: Any,
    option: str,
    paas_var: str,
    cli: str | None,
    corral_env: str | None,
    uvicorn_env: str | None,
    paas: str | None,
    expected: int | None,
) -> None:
    """Command line > CORRAL_<NAME> > UVICORN_<NAME> > the PaaS variable > default."""
    upper = option.upper()
    given = {f"CORRAL_{upper}": corral_env, f"UVICORN_{upper}": uvicorn_env, paas_var: paas}
    env = {k: v for k, v in given.items() if v is not None}
    args = ["app:app"] + ([f"--{option}", cli] if cli else [])
    result, config = invoke(args, env)
    assert result.exit_code == 0, result.output
    assert config is not None and getattr(config, option) == expected
    if option == "workers":
        assert config.supervised is (expected is not None)
    else:  # the default port applies when nothing set one
        assert config.bind_port == (8000 if expected is None else expected)


def test_precedence_forwarded_allow_ips(invoke: Any) -> None:
    """FORWARDED_ALLOW_IPS is the last fallback for --forwarded-allow-ips."""
    _, config = invoke(["app:app"], {"FORWARDED_ALLOW_IPS": "10.0.0.1"})
    assert config.trusted_proxies == ("10.0.0.1",)
    _, config = invoke(
        ["app:app"], {"FORWARDED_ALLOW_IPS": "10.0.0.1", "UVICORN_FORWARDED_ALLOW_IPS": "*"}
    )
    assert config.trusted_proxies == ("*",)


def test_every_option_has_corral_and_uvicorn_env(invoke: Any) -> None:
    """Each declared setting is reachable as CORRAL_<NAME> and as UVICORN_<NAME>."""
    params = {p.name: p for p in corral.cli.cli.params}
    for name, option, _default in options():
        envvar = params[name].envvar
        assert envvar[:2] == [f"CORRAL_{name.upper()}", f"UVICORN_{name.upper()}"], name
        assert list(envvar[2:]) == list(option.fallback_env)


@pytest.mark.smoke
def test_app_from_environment(invoke: Any) -> None:
    """CORRAL_APP wins over UVICORN_APP; either replaces the positional APP."""
    _, config = invoke([], {"UVICORN_APP": "u:app"})
    assert config.app == "u:app"
    _, config = invoke([], {"UVICORN_APP": "u:app", "CORRAL_APP": "c:app"})
    assert config.app == "c:app"
    _, config = invoke(["cli:app"], {"CORRAL_APP": "c:app"})
    assert config.app == "cli:app"


def test_repeatable_options_split_on_whitespace(invoke: Any) -> None:
    """Repeatable options take space-separated values from the environment."""
    _, config = invoke(
        ["app:app"],
        {"CORRAL_HEADERS": "X-A:1 X-B:2", "UVICORN_BIND": "127.0.0.1:0 unix:/tmp/c.sock"},
    )
    assert config.headers == (("X-A", "1"), ("X-B", "2"))
    assert config.bind == ("127.0.0.1:0", "unix:/tmp/c.sock")


@pytest.mark.parametrize(
    ("env", "field", "expected"),
    [
        ({"CORRAL_FACTORY": "true"}, "factory", True),
        ({"UVICORN_ACCESS_LOG": "false"}, "access_log", False),
        ({"CORRAL_SERVER_HEADER": "0"}, "server_header", False),
        ({"UVICORN_WS_PER_MESSAGE_DEFLATE": "false"}, "ws_per_message_deflate", False),
        ({"CORRAL_UMASK": "027"}, "umask", 0o027),
        ({"CORRAL_TIMEOUT_KEEP_ALIVE": "2.5"}, "timeout_keep_alive", 2.5),
        ({"UVICORN_LOG_LEVEL": "debug"}, "log_level", "debug"),
    ],
)
def test_typed_values_from_environment(
    invoke: Any, env: dict[str, str], field: str, expected: Any
) -> None:
    """Flags, booleans, octal and numbers are converted from their environment text."""
    result, config = invoke(["app:app"], env)
    assert result.exit_code == 0, result.output
    assert getattr(config, field) == expected


def test_bad_environment_value_names_option(invoke: Any) -> None:
    """A bad value from the environment is a usage error (exit 2) naming the option."""
    result, config = invoke(["app:app"], {"CORRAL_PORT": "eighty"})
    assert result.exit_code == 2 and config is None
    assert "--port" in result.output


def test_paas_port_does_not_add_listener_next_to_uds(invoke: Any) -> None:
    """PORT is only a default: with --uds given it adds no TCP listener."""
    _, config = invoke(["app:app", "--uds", "/tmp/corral-test.sock"], {"PORT": "5000"})
    assert config.port is None and not config.serves_host_port
    _, config = invoke(["app:app", "--uds", "/tmp/corral-test.sock"], {"CORRAL_PORT": "5000"})
    assert config.port == 5000 and config.serves_host_port


# --- --env-file -------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / ".env"
    path.write_text(text)
    return str(path)


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A scratch os.environ: what load_env_file adds is gone after the test."""
    saved = dict(os.environ)
    yield os.environ  # type: ignore[misc]
    os.environ.clear()
    os.environ.update(saved)


@pytest.mark.smoke
def test_env_file_syntax(tmp_path: Path, environ: dict[str, str]) -> None:
    """python-dotenv's syntax: comments, export, quotes, escapes, multi-line values."""
    path = write(
        tmp_path,
        "# a comment\n"
        "\n"
        "DOTENV_PLAIN=value\n"
        "export DOTENV_EXPORTED=yes\n"
        "DOTENV_SPACED = padded  \n"
        "DOTENV_INLINE=kept # dropped\n"
        "DOTENV_HASH=a#b\n"
        "DOTENV_SINGLE='raw \\n'\n"
        'DOTENV_DOUBLE="line1\\nline2 \\"q\\""\n'
        'DOTENV_MULTI="first\nsecond"\n'
        "DOTENV_EMPTY=\n"
        "DOTENV_URL=postgres://u:p@h/db?x=1\n",
    )
    load_env_file(path)
    assert {k: v for k, v in environ.items() if k.startswith("DOTENV_")} == {
        "DOTENV_PLAIN": "value",
        "DOTENV_EXPORTED": "yes",
        "DOTENV_SPACED": "padded",
        "DOTENV_INLINE": "kept",
        "DOTENV_HASH": "a#b",
        "DOTENV_SINGLE": "raw \\n",
        "DOTENV_DOUBLE": 'line1\nline2 "q"',
        "DOTENV_MULTI": "first\nsecond",
        "DOTENV_EMPTY": "",
        "DOTENV_URL": "postgres://u:p@h/db?x=1",
    }


def test_env_file_semantics_are_python_dotenvs(tmp_path: Path, environ: dict[str, str]) -> None:
    """Where a hand-written parser differed from python-dotenv (and so from uvicorn):
    a bare KEY is allowed and sets nothing, ``${VAR}`` expands inside single quotes too,
    ``\\'`` escapes a single quote, and the process environment wins over the file."""
    environ["DOTENV_KEEP"] = "process"
    environ.pop("DOTENV_BARE", None)
    environ.pop("DOTENV_UNSET", None)
    path = write(
        tmp_path,
        "DOTENV_BARE\n"
        "DOTENV_BASE=/srv\n"
        "DOTENV_DATA=${DOTENV_BASE}/data\n"
        "DOTENV_SINGLE='${DOTENV_BASE}'\n"
        "DOTENV_QUOTE='it\\'s'\n"
        "DOTENV_LEVEL=${DOTENV_UNSET:-info}\n"
        "DOTENV_NOBRACE=$DOTENV_BASE\n"
        "DOTENV_KEEP=file\n",
    )
    load_env_file(path)
    assert "DOTENV_BARE" not in environ
    assert environ["DOTENV_DATA"] == "/srv/data"
    assert environ["DOTENV_SINGLE"] == "/srv"
    assert environ["DOTENV_QUOTE"] == "it's"
    assert environ["DOTENV_LEVEL"] == "info"
    assert environ["DOTENV_NOBRACE"] == "$DOTENV_BASE"
    assert environ["DOTENV_KEEP"] == "process"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("NOT A LINE\n", "line 1: python-dotenv cannot parse 'NOT A LINE'"),
        ("OK=1\n=oops\n", "line 2: python-dotenv cannot parse '=oops'"),
        ('A="never closed\n', "line 1"),
        ('A="x" trailing\n', "line 1"),
    ],
)
def test_env_file_errors(tmp_path: Path, environ: dict[str, str], text: str, message: str) -> None:
    """A line python-dotenv cannot parse (it would skip it) is a ConfigError naming it."""
    with pytest.raises(ConfigError, match=message) as info:
        load_env_file(write(tmp_path, text))
    assert info.value.option == "--env-file"


def test_env_file_missing(tmp_path: Path) -> None:
    """A missing env file is a ConfigError naming --env-file."""
    with pytest.raises(ConfigError, match="cannot read") as info:
        load_env_file(str(tmp_path / "absent.env"))
    assert info.value.option == "--env-file"
