"""The ``corral`` command, generated from the settings declared in :mod:`corral.config`.

Each Config field's :class:`~corral.config.Option` becomes a click option with its flags,
help, type and environment variables (``CORRAL_<NAME>``, then ``UVICORN_<NAME>``, then the
option's PaaS fallbacks). Only values the user actually gave (command line or environment)
reach :class:`Config`; everything else keeps Config's own default, so defaults live in one
place. :func:`main` is the only function in corral that calls ``sys.exit``.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import click
from click.core import ParameterSource
from corral import configfile, sizing
from corral._version import __version__
from corral.config import Config, Option, options
from corral.errors import ConfigError, ExitCode
from corral.options import split_header

#: uvicorn options corral deliberately does not provide, with what to do instead. They are
#: accepted by the parser only to fail with this message, never to be silently ignored.
UNSUPPORTED_UVICORN_FLAGS: dict[str, str] = {
    "--http2": "corral serves HTTP/1.1; terminate HTTP/2 at a reverse proxy",
}

EPILOG = (
    "Every option can also be set in the environment as CORRAL_<NAME> or UVICORN_<NAME>"
    " (e.g. CORRAL_PORT=9000); repeatable options take space-separated values. Precedence:"
    " command line > CORRAL_* > UVICORN_* > WEB_CONCURRENCY, FORWARDED_ALLOW_IPS, PORT >"
    " defaults."
)


def envvars(name: str, option: Option | None = None) -> list[str]:
    """The environment variables for setting ``name``, highest precedence first."""
    upper = name.upper()
    extra = list(option.fallback_env) if option is not None else []
    return [f"CORRAL_{upper}", f"UVICORN_{upper}", *extra]


if TYPE_CHECKING:
    # click >= 8.3 makes ParamType generic; older releases (still supported) are not.
    _IntParam = click.ParamType[int]
    _HeaderParam = click.ParamType[tuple[str, str]]
else:
    _IntParam = _HeaderParam = click.ParamType


class OctalInt(_IntParam):
    """An octal permission mask such as 027 or 0o027."""

    name = "octal"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            number = int(str(value), 8)
        except ValueError:
            self.fail(f"{value!r} is not an octal number such as 022", param, ctx)
        if not 0 <= number <= 0o777:
            self.fail(f"{value!r} is outside 000..777", param, ctx)
        return number


class HeaderPair(_HeaderParam):
    """``NAME:VALUE`` into a (name, value) tuple; whitespace around either is dropped."""

    name = "header"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, str]:
        if isinstance(value, tuple):
            return value
        pair = split_header(str(value))
        if pair is None:
            self.fail(f"{value!r} is not NAME:VALUE", param, ctx)
        return pair


class RefusingChoice(click.Choice):  # type: ignore[type-arg, unused-ignore]
    """A choice whose ``refused`` values pass the parser, unlisted, so that Config refuses
    them with its reason; --help and click's own errors list only the working choices."""

    def __init__(self, choices: Sequence[str], refused: Sequence[str]) -> None:
        super().__init__(choices)
        self.refused = tuple(refused)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and value in self.refused:
            return value
        return super().convert(value, param, ctx)


def _click_type(name: str, option: Option) -> click.ParamType[Any] | None:
    if name == "headers":
        return HeaderPair()
    if name == "ws_per_message_deflate":
        return click.BOOL  # uvicorn takes a click BOOLEAN: true/false, 1/0, yes/no, on/off
    return {
        "str": click.STRING,
        "auto_int": click.STRING,  # a number or 'auto', resolved by corral.sizing
        "size": click.STRING,
        "int": click.INT,
        "float": click.FLOAT,
        "octal": OctalInt(),
        "multiple": click.STRING,
        "choice": RefusingChoice(option.choices, [value for value, _ in option.refused]),
    }.get(option.kind)


def _show_default(option: Option, default: Any) -> bool:
    """Show Config's default in --help unless it is empty or the help text already says it."""
    if default in (None, "", ()) or "[default" in option.help:
        return False
    return option.kind not in ("flag", "octal")


def _alias_name(name: str, index: int) -> str:
    return f"{name}__alias{index}"


def build_params() -> list[click.Parameter]:
    """One click parameter per setting, plus hidden aliases and unsupported uvicorn flags."""
    params: list[click.Parameter] = [
        # Not required by click: a --config file may name the app instead.
        click.Argument(["app"], envvar=["CORRAL_APP", "UVICORN_APP"], required=False)
    ]
    for name, option, default in options():
        common: dict[str, Any] = {
            "help": option.help,
            "envvar": envvars(name, option),
            # Config's own default, so --help shows it; given_params() drops DEFAULT-sourced
            # values, so Config stays the one place that applies defaults.
            "default": default,
            "show_default": _show_default(option, default),
        }
        if option.metavar:
            common["metavar"] = option.metavar
        click_type = _click_type(name, option)
        if option.kind == "flag":
            params.append(click.Option([*option.flags, name], is_flag=True, **common))
        elif option.kind == "bool":
            params.append(click.Option([*option.flags, name], **common))
        else:
            multiple = option.kind == "multiple"
            params.append(
                click.Option([*option.flags, name], type=click_type, multiple=multiple, **common)
            )
        for index, alias in enumerate(option.hidden_aliases):
            params.append(
                click.Option(
                    [alias, _alias_name(name, index)],
                    type=click_type,
                    is_flag=option.kind == "flag",
                    multiple=option.kind == "multiple",
                    default=None,
                    hidden=True,
                )
            )
    for flag, _reason in UNSUPPORTED_UVICORN_FLAGS.items():
        key = "unsupported_" + flag.lstrip("-").replace("-", "_")
        params.append(
            click.Option(
                [flag, key],
                is_flag=True,
                default=None,
                hidden=True,
                envvar=envvars(flag.lstrip("-").replace("-", "_")),
            )
        )
    params.append(
        click.Option(
            ["--print-config"],
            is_flag=True,
            help="Print the effective settings as TOML, each with where it came from"
            " (cli, env, file, default), and exit.",
        )
    )
    params.append(
        click.Option(
            ["--version"],
            is_flag=True,
            expose_value=False,
            is_eager=True,
            callback=_print_version,
            help="Display the corral version and exit.",
        )
    )
    return params


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    click.echo(
        f"Running corral {__version__} with {platform.python_implementation()}"
        f" {platform.python_version()} on {platform.system()}"
    )
    ctx.exit(0)


def given_params(ctx: click.Context, params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters the user set (command line or environment), defaults left out."""
    given: dict[str, Any] = {}
    for key, value in params.items():
        source = ctx.get_parameter_source(key)
        if source in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP):
            continue
        if value is None or value == ():
            continue
        given[key] = value
    return given


def port_only_from_paas(ctx: click.Context, environ: Mapping[str, str]) -> bool:
    """Whether --port's value came from the PaaS ``PORT`` variable alone."""
    if ctx.get_parameter_source("port") is not ParameterSource.ENVIRONMENT:
        return False
    return not (environ.get("CORRAL_PORT") or environ.get("UVICORN_PORT"))


def build_config(given: Mapping[str, Any], paas_port: bool = False) -> Config:
    """Make the Config from user-given parameters; bad values become click usage errors.

    ``paas_port`` says the port came only from ``PORT``. That is a default listener (as in
    gunicorn): an explicit --uds, --fd or --bind replaces it rather than gaining a TCP
    listener next to it that the user never asked for.
    """
    settings = dict(given)
    for key in [k for k in settings if k.startswith("unsupported_")]:
        if settings.pop(key):
            flag = "--" + key[len("unsupported_") :].replace("_", "-")
            raise click.UsageError(
                f"'{flag}' is a uvicorn option corral does not implement:"
                f" {UNSUPPORTED_UVICORN_FLAGS[flag]}"
            )
    for name, option, _default in options():
        for index, alias in enumerate(option.hidden_aliases):
            value = settings.pop(_alias_name(name, index), None)
            if value is not None and name not in settings:
                settings[name] = value
            elif value is not None:
                raise click.UsageError(f"'{alias}' and '{option.flags[0]}' are the same option")
    other_listeners = settings.get("uds") or settings.get("fd") is not None or settings.get("bind")
    if paas_port and other_listeners:
        settings.pop("port", None)
    try:
        sizing.resolve(settings)
        config = Config(**settings)
        from corral.listeners import parse_bind

        for spec in config.bind:
            parse_bind(spec)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    return config


def serve(config: Config) -> ExitCode:
    """Run the server (a seam: tests replace it to inspect the Config)."""
    from corral.main import serve_config

    return serve_config(config)


def _from_fallback_env(ctx: click.Context, name: str, environ: Mapping[str, str]) -> bool:
    """Whether ``name``'s value came only from a PaaS variable (PORT, WEB_CONCURRENCY, ...),
    which ranks below a config file."""
    if ctx.get_parameter_source(name) is not ParameterSource.ENVIRONMENT:
        return False
    return not any(environ.get(var) for var in envvars(name)[:2])


def layered_settings(
    ctx: click.Context, params: Mapping[str, Any], environ: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings by precedence: command line > CORRAL_* > UVICORN_* > --config file >
    PaaS variables > defaults; and where each came from (cli, env or file)."""
    given = given_params(ctx, params)
    sources = {
        key: "cli" if ctx.get_parameter_source(key) is ParameterSource.COMMANDLINE else "env"
        for key in given
    }
    if given.get("config"):
        try:
            from_file = configfile.read(given["config"])
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from None
        for key, value in from_file.values.items():
            if key not in given or _from_fallback_env(ctx, key, environ):
                given[key] = value
                sources[key] = "file"
    return given, sources


def _command(**params: Any) -> None:
    ctx = click.get_current_context()
    print_config = params.pop("print_config", False)
    given, sources = layered_settings(ctx, params, os.environ)
    if given.get("app") is None and not print_config:
        raise click.UsageError("Missing argument 'APP'.")
    paas_port = sources.get("port") != "file" and port_only_from_paas(ctx, os.environ)
    config = build_config(given, paas_port)
    if print_config:
        click.echo(configfile.render(config, sources), nl=False)
        ctx.exit(0)
    ctx.exit(int(serve(config)))


cli = click.Command(
    name="corral",
    callback=_command,
    params=build_params(),
    help="Serve the ASGI application APP (module:attribute) with corral.",
    epilog=EPILOG,
    context_settings={"max_content_width": 100},
)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Console entry point: parse, serve, and exit with the resulting code."""
    try:
        result = cli.main(args=argv, prog_name="corral", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(ExitCode.ERROR)
    sys.exit(int(result) if isinstance(result, int) else ExitCode.OK)
