"""The one declaration of every corral setting.

Each field of :class:`Config` carries its command-line flags, help text and checks in its
metadata. The CLI (``corral.cli``), the environment variables (``CORRAL_<NAME>`` and
``UVICORN_<NAME>``) and the programmatic API (``corral.run(app, **settings)``) are all
derived from these fields, so a setting is declared exactly once. Constructing a Config
validates values and does nothing else: no files are read, no sockets bound, no logging set.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Literal

from corral.errors import ConfigError

Check = Callable[[Any], str | None]

#: Settings declared here whose behaviour has not landed yet. Setting one to anything but its
#: default is refused with a clear error rather than silently ignored.
PENDING: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Option:
    """How one Config field appears on the command line and in the environment."""

    flags: tuple[str, ...]
    help: str
    kind: Literal["str", "int", "float", "bool", "flag", "choice", "multiple", "octal"] = "str"
    choices: tuple[str, ...] = ()
    #: Extra environment variables consulted after CORRAL_* and UVICORN_* (PaaS conventions).
    fallback_env: tuple[str, ...] = ()
    check: Check | None = None
    metavar: str | None = None
    #: Accepted on the CLI but hidden from --help (gunicorn-compatible spellings).
    hidden_aliases: tuple[str, ...] = ()


def _setting(default: Any, *flags: str, help: str, **kw: Any) -> Any:
    """A dataclass field carrying its :class:`Option` metadata."""
    option = Option(flags=flags, help=help, **kw)
    if isinstance(default, list | dict):
        raise TypeError("mutable defaults are not allowed")
    return field(default=default, metadata={"option": option})


def _non_negative(value: Any) -> str | None:
    return None if value is None or value >= 0 else "must be zero or more"


def _positive(value: Any) -> str | None:
    return None if value is None or value > 0 else "must be greater than zero"


def _port(value: Any) -> str | None:
    return None if value is None or 0 <= value <= 65535 else "must be between 0 and 65535"


def _header_pair(value: Any) -> str | None:
    for item in value:
        if not (isinstance(item, tuple) and len(item) == 2 and item[0]):
            return f"{item!r} is not NAME:VALUE"
        name, val = item
        if any(c in name + val for c in "\r\n\0") or any(c in name for c in " \t:"):
            return f"{name!r} has characters not allowed in a header"
    return None


def _health_path(value: Any) -> str | None:
    return None if value is None or str(value).startswith("/") else "must start with '/'"


@dataclass(frozen=True, kw_only=True)
class Config:
    """Every setting of a corral server. Validates on construction and does nothing else."""

    app: Any = field(default=None, metadata={"option": Option((), "APP as module:attribute")})

    # --- where to listen -------------------------------------------------------------
    host: str | None = _setting(
        None, "--host", help="Bind socket to this host.  [default: 127.0.0.1]"
    )
    port: int | None = _setting(
        None,
        "--port",
        help="Bind socket to this port. If 0, an available port will be picked.  [default: 8000]",
        kind="int",
        fallback_env=("PORT",),
        check=_port,
    )
    uds: str | None = _setting(None, "--uds", help="Bind to a UNIX domain socket.")
    fd: int | None = _setting(
        None, "--fd", help="Bind to socket from this file descriptor.", kind="int",
        check=_non_negative,
    )
    bind: tuple[str, ...] = _setting(
        (), "--bind", "-b", kind="multiple", metavar="ADDR",
        help="Listen on ADDR: HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N. Repeatable.",
    )
    backlog: int = _setting(
        2048, "--backlog", kind="int", check=_positive,
        help="Maximum number of connections to hold in backlog.",
    )

    # --- the application ---------------------------------------------------------------
    app_dir: str = _setting(
        "", "--app-dir",
        help="Look for APP in the specified directory, by adding this to the PYTHONPATH."
        " Defaults to the current working directory.",
    )
    factory: bool = _setting(
        False, "--factory", kind="flag",
        help="Treat APP as an application factory, i.e. a () -> <ASGI app> callable.",
    )
    interface: str = _setting(
        "auto", "--interface", kind="choice", choices=("auto", "asgi3", "asgi2", "wsgi"),
        help="Select ASGI3 or ASGI2 as the application interface.",
    )
    lifespan: str = _setting(
        "auto", "--lifespan", kind="choice", choices=("auto", "on", "off"),
        help="Lifespan implementation.",
    )
    root_path: str = _setting(
        "", "--root-path",
        help="Set the ASGI 'root_path' for applications submounted below a given URL path.",
    )
    env_file: str | None = _setting(None, "--env-file", help="Environment configuration file.")
    preload: bool = _setting(
        False, "--preload", kind="flag",
        help="Import the app once in the master before forking workers (copy-on-write).",
    )

    # --- implementations -------------------------------------------------------------
    loop: str = _setting(
        "auto", "--loop", kind="choice", choices=("auto", "asyncio", "uvloop"),
        help="Event loop implementation.",
    )
    http: str = _setting(
        "auto", "--http", kind="choice", choices=("auto", "httptools", "h11"),
        help="HTTP protocol implementation.",
    )
    ws: str = _setting(
        "auto", "--ws", kind="choice",
        choices=("auto", "none", "websockets", "websockets-sansio", "wsproto"),
        help="WebSocket protocol implementation.",
    )
    ws_max_size: int = _setting(
        16 * 1024 * 1024, "--ws-max-size", kind="int", check=_positive,
        help="WebSocket max size message in bytes.",
    )
    ws_max_queue: int = _setting(
        32, "--ws-max-queue", kind="int", check=_positive,
        help="The maximum length of the WebSocket message queue.",
    )
    ws_ping_interval: float | None = _setting(
        20.0, "--ws-ping-interval", kind="float", check=_non_negative,
        help="WebSocket ping interval in seconds (0 disables).",
    )
    ws_ping_timeout: float | None = _setting(
        20.0, "--ws-ping-timeout", kind="float", check=_non_negative,
        help="WebSocket ping timeout in seconds (0 disables).",
    )
    ws_per_message_deflate: bool = _setting(
        True, "--ws-per-message-deflate", kind="choice", choices=("true", "false"),
        help="WebSocket per-message-deflate compression.",
    )
    h11_max_incomplete_event_size: int | None = _setting(
        None, "--h11-max-incomplete-event-size", kind="int", check=_positive,
        help="Maximum size of an incomplete HTTP request head (kept for uvicorn"
        " compatibility; same as --limit-request-header-size).",
    )

    # --- process model ---------------------------------------------------------------
    workers: int | None = _setting(
        None, "--workers", kind="int", fallback_env=("WEB_CONCURRENCY",), check=_positive,
        help="Number of worker processes under a supervising master. Without it corral"
        " runs as a single process.",
    )
    limit_max_requests: int | None = _setting(
        None, "--limit-max-requests", kind="int", check=_positive,
        help="Maximum number of requests a worker serves before it is replaced.",
    )
    limit_max_requests_jitter: int = _setting(
        0, "--limit-max-requests-jitter", kind="int", check=_non_negative,
        help="Add a random 0..J to --limit-max-requests so workers don't recycle together.",
    )
    limit_worker_memory: int | None = _setting(
        None, "--limit-worker-memory", kind="int", check=_positive, metavar="MIB",
        help="Replace a worker whose unique memory (USS) exceeds this many MiB.",
    )
    timeout_worker_healthcheck: float = _setting(
        30.0, "--timeout-worker-healthcheck", kind="float", check=_positive,
        help="Seconds without a heartbeat from a worker's event loop before it is killed.",
    )
    timeout_worker_boot: float = _setting(
        60.0, "--timeout-worker-boot", kind="float", check=_positive,
        help="Seconds a worker may take to import the app and finish lifespan startup.",
    )
    reload: bool = _setting(False, "--reload", kind="flag", help="Enable auto-reload.")
    reload_dirs: tuple[str, ...] = _setting(
        (), "--reload-dir", kind="multiple", help="Set reload directories explicitly."
    )
    reload_includes: tuple[str, ...] = _setting(
        (), "--reload-include", kind="multiple", help="Set glob patterns to include."
    )
    reload_excludes: tuple[str, ...] = _setting(
        (), "--reload-exclude", kind="multiple", help="Set glob patterns to exclude."
    )
    reload_delay: float = _setting(
        0.25, "--reload-delay", kind="float", check=_non_negative,
        help="Delay between previous and next check if application needs to be reloaded.",
    )

    # --- connections and limits ------------------------------------------------------
    limit_concurrency: int | None = _setting(
        None, "--limit-concurrency", kind="int", check=_positive,
        help="Maximum number of concurrent connections or tasks per serving process before"
        " issuing HTTP 503 responses.",
    )
    timeout_keep_alive: float = _setting(
        5.0, "--timeout-keep-alive", kind="float", check=_non_negative,
        help="Close Keep-Alive connections if no new data is received within this timeout.",
    )
    timeout_graceful_shutdown: float = _setting(
        30.0, "--timeout-graceful-shutdown", kind="float", check=_non_negative,
        help="Maximum number of seconds to wait for in-flight requests on shutdown.",
    )
    # Lifespan shutdown runs after the drain; apps close pools there, which is quick, so a
    # bounded allowance keeps a stuck shutdown hook from holding a stop forever.
    timeout_lifespan_shutdown: float = _setting(
        10.0, "--timeout-lifespan-shutdown", kind="float", check=_non_negative,
        help="Maximum number of seconds the app's lifespan shutdown may take.",
    )
    timeout_shutdown_delay: float = _setting(
        0.0, "--timeout-shutdown-delay", kind="float", check=_non_negative,
        help="On SIGTERM keep serving this many seconds (with Connection: close) before"
        " stopping, so load balancers can take the instance out of rotation.",
    )
    # 8190 is gunicorn's (and Apache's) request-line limit: long enough for any real URL.
    limit_request_line: int = _setting(
        8190, "--limit-request-line", kind="int", check=_positive,
        help="Maximum size of the request line in bytes (414 above it).",
    )
    # 100 fields is gunicorn's default; browsers send about 15, proxies add a handful.
    limit_request_fields: int = _setting(
        100, "--limit-request-fields", kind="int", check=_positive,
        help="Maximum number of header fields in a request (431 above it).",
    )
    limit_request_field_size: int = _setting(
        8190, "--limit-request-field-size", kind="int", check=_positive,
        hidden_aliases=("--limit-request-field_size",),
        help="Maximum size of one header field in bytes (431 above it).",
    )
    # 64 KiB bounds the memory one connection can pin before the app sees anything; nginx's
    # large_client_header_buffers default (4 x 8 KiB) is smaller, so real clients fit.
    limit_request_header_size: int = _setting(
        65536, "--limit-request-header-size", kind="int", check=_positive,
        help="Maximum size of the whole request head in bytes (431 above it).",
    )
    limit_request_body: int = _setting(
        0, "--limit-request-body", kind="int", check=_non_negative,
        help="Maximum request body size in bytes; 0 means unlimited (413 above it).",
    )
    # 30 s for the head stops slowloris clients while tolerating very slow mobile links.
    timeout_request_header: float = _setting(
        30.0, "--timeout-request-header", kind="float", check=_positive,
        help="Seconds a client may take to send a complete request head (408 after it).",
    )
    timeout_request_body: float = _setting(
        60.0, "--timeout-request-body", kind="float", check=_positive,
        help="Seconds a request body may stall without a byte arriving (408 after it).",
    )

    # --- responses -------------------------------------------------------------------
    headers: tuple[tuple[str, str], ...] = _setting(
        (), "--header", kind="multiple", metavar="NAME:VALUE", check=_header_pair,
        help="Specify custom default HTTP response headers as a Name:Value pair.",
    )
    server_header: bool = _setting(
        True, "--server-header/--no-server-header", kind="bool",
        help="Enable/Disable default Server header.",
    )
    date_header: bool = _setting(
        True, "--date-header/--no-date-header", kind="bool",
        help="Enable/Disable default Date header.",
    )
    health_path: str | None = _setting(
        None, "--health-path", check=_health_path,
        help="Answer this path with 200 (503 once stopping) without calling the app.",
    )

    # --- logging ---------------------------------------------------------------------
    log_level: str | None = _setting(
        None, "--log-level", kind="choice",
        choices=("critical", "error", "warning", "info", "debug", "trace"),
        help="Log level. [default: info]",
    )
    access_log: bool = _setting(
        True, "--access-log/--no-access-log", kind="bool", help="Enable/Disable access log."
    )
    use_colors: bool | None = _setting(
        None, "--use-colors/--no-use-colors", kind="bool",
        help="Enable/Disable colorized logging.",
    )
    log_config: str | dict[str, Any] | None = _setting(  # noqa: RUF009 (default is None)
        None, "--log-config",
        help="Logging configuration file. Supported formats: .ini, .json, .yaml.",
    )

    # --- proxies ---------------------------------------------------------------------
    proxy_headers: bool = _setting(
        True, "--proxy-headers/--no-proxy-headers", kind="bool",
        help="Enable/Disable X-Forwarded-Proto, X-Forwarded-For and Forwarded to populate"
        " url scheme and remote address info.",
    )
    forwarded_allow_ips: str | None = _setting(
        None, "--forwarded-allow-ips", fallback_env=("FORWARDED_ALLOW_IPS",),
        help="Comma separated list of IP addresses, IP networks, or literals (e.g. UNIX"
        " Socket path) to trust with proxy headers. Use '*' to trust all.  [default:"
        " 127.0.0.1,::1]",
    )
    proxy_protocol: bool = _setting(
        False, "--proxy-protocol", kind="flag",
        help="Require a PROXY protocol (v1 or v2) header on every connection.",
    )

    # --- TLS -------------------------------------------------------------------------
    ssl_keyfile: str | None = _setting(None, "--ssl-keyfile", help="SSL key file")
    ssl_certfile: str | None = _setting(None, "--ssl-certfile", help="SSL certificate file")
    ssl_keyfile_password: str | None = _setting(
        None, "--ssl-keyfile-password", help="SSL keyfile password"
    )
    ssl_version: int = _setting(
        int(ssl.PROTOCOL_TLS_SERVER), "--ssl-version", kind="int",
        help="SSL version to use (see stdlib ssl module's)",
    )
    ssl_cert_reqs: int = _setting(
        int(ssl.CERT_NONE), "--ssl-cert-reqs", kind="int",
        help="Whether client certificate is required (see stdlib ssl module's)",
    )
    ssl_ca_certs: str | None = _setting(None, "--ssl-ca-certs", help="CA certificates file")
    ssl_ciphers: str = _setting(
        "TLSv1", "--ssl-ciphers", help="Ciphers to use (see stdlib ssl module's)"
    )

    # --- running as a daemon ---------------------------------------------------------
    pid: str | None = _setting(None, "--pid", help="Write the master's PID to this file.")
    user: str | None = _setting(None, "--user", help="Switch to this user after binding.")
    group: str | None = _setting(None, "--group", help="Switch to this group after binding.")
    umask: int | None = _setting(
        None, "--umask", kind="octal", help="Set the process umask (octal, e.g. 027)."
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            option: Option | None = f.metadata.get("option")
            if option is None or not option.flags:
                continue
            value = getattr(self, f.name)
            flag = option.flags[0].split("/")[0]
            if option.kind == "choice" and value is not None:
                text = str(value).lower() if isinstance(value, bool) else str(value)
                if text not in option.choices:
                    raise ConfigError(flag, f"{value!r} is not one of {', '.join(option.choices)}")
            if option.check is not None:
                problem = option.check(value)
                if problem:
                    raise ConfigError(flag, problem)
            if f.name in PENDING and value != f.default:
                raise ConfigError(flag, "this option is not implemented in corral yet")
        if self.interface == "wsgi":
            raise ConfigError(
                "--interface",
                "corral serves ASGI only; wrap a WSGI app with an adapter such as"
                " a2wsgi's WSGIMiddleware",
            )
        if self.ws == "wsproto":
            raise ConfigError(
                "--ws", "corral implements WebSockets on 'websockets' only; use --ws websockets"
            )
        if self.ssl_keyfile and not self.ssl_certfile:
            raise ConfigError("--ssl-keyfile", "requires --ssl-certfile")
        if self.uds is not None and self.fd is not None:
            raise ConfigError("--uds", "cannot be combined with --fd")

    # --- derived values (pure) -------------------------------------------------------
    @property
    def bind_host(self) -> str:
        return "127.0.0.1" if self.host is None else self.host

    @property
    def bind_port(self) -> int:
        return 8000 if self.port is None else self.port

    @property
    def serves_host_port(self) -> bool:
        """Whether --host/--port make a listener: when given, or when nothing else is."""
        if self.host is not None or self.port is not None:
            return True
        return not (self.bind or self.uds is not None or self.fd is not None)

    @property
    def effective_log_level(self) -> str:
        return self.log_level or "info"

    @property
    def trusted_proxies(self) -> tuple[str, ...]:
        raw = "127.0.0.1,::1" if self.forwarded_allow_ips is None else self.forwarded_allow_ips
        return tuple(part.strip() for part in raw.split(",") if part.strip())

    @property
    def head_size_limit(self) -> int:
        """The whole-head limit; the older h11 option overrides it when set."""
        if self.h11_max_incomplete_event_size is not None:
            return self.h11_max_incomplete_event_size
        return self.limit_request_header_size

    @property
    def supervised(self) -> bool:
        """True when a master forks workers (``--workers`` or ``WEB_CONCURRENCY``)."""
        return self.workers is not None or self.reload

    @property
    def ws_enabled(self) -> bool:
        return self.ws != "none"

    @property
    def deflate(self) -> bool:
        value = self.ws_per_message_deflate
        return value if isinstance(value, bool) else str(value).lower() == "true"


def options() -> list[tuple[str, Option, Any]]:
    """(field name, option, default) for every setting that has command-line flags."""
    out = []
    for f in fields(Config):
        option: Option | None = f.metadata.get("option")
        if option is not None and option.flags:
            default = None if f.default is MISSING else f.default
            out.append((f.name, option, default))
    return out
