"""The one declaration of every corral setting.

Each field of :class:`Config` carries its command-line flags, help text and checks in its
metadata (an :class:`~corral.options.Option`, declared with :func:`~corral.options.setting`).
The CLI (``corral.cli``), the environment variables (``CORRAL_<NAME>`` and ``UVICORN_<NAME>``)
and the programmatic API (``corral.run(app, **settings)``) are all derived from these fields,
so a setting is declared exactly once. Constructing a Config validates values and does
nothing else: no files are read, no sockets bound, no logging set.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any

from corral.errors import ConfigError
from corral.options import (
    Option,
    check_options,
    declared_options,
    header_pairs,
    non_negative,
    port_number,
    positive,
    setting,
    url_path,
)

__all__ = ["Config", "Option", "options"]


@dataclass(frozen=True, kw_only=True)
class Config:
    """Every setting of a corral server. Validates on construction and does nothing else."""

    # One setting per declaration, its arguments kept compact so the list reads as a table.
    # fmt: off
    app: Any = field(default=None, metadata={"option": Option((), "APP as module:attribute")})
    config: str | None = setting(
        None, "--config", "-c",
        help="Read settings from this TOML file (keys named as in corral.Config), or from"
        " [tool.corral] of a pyproject.toml. (-c as in gunicorn)",
    )
    #: (level, message) pairs found while resolving the settings (``--workers auto``, memory
    #: shares), logged once logging is configured.
    notices: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    # --- where to listen -------------------------------------------------------------
    host: str | None = setting(
        None, "--host", help="Bind socket to this host.  [default: 127.0.0.1]"
    )
    port: int | None = setting(
        None,
        "--port",
        help="Bind socket to this port. If 0, an available port will be picked.  [default: 8000]",
        kind="int",
        fallback_env=("PORT",),
        check=port_number,
    )
    uds: str | None = setting(None, "--uds", help="Bind to a UNIX domain socket.")
    fd: int | None = setting(
        None, "--fd", help="Bind to socket from this file descriptor.", kind="int",
        check=non_negative,
    )
    bind: tuple[str, ...] = setting(
        (), "--bind", "-b", kind="multiple", metavar="ADDR",
        help="Listen on ADDR: HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N. Repeatable.",
    )
    backlog: int = setting(
        2048, "--backlog", kind="int", check=positive,
        help="Maximum number of connections to hold in backlog.",
    )

    # --- the application ---------------------------------------------------------------
    app_dir: str = setting(
        "", "--app-dir",
        help="Look for APP in the specified directory, by adding this to the PYTHONPATH."
        " Defaults to the current working directory.",
    )
    factory: bool = setting(
        False, "--factory", kind="flag",
        help="Treat APP as an application factory, i.e. a () -> <ASGI app> callable.",
    )
    interface: str = setting(
        "auto", "--interface", kind="choice", choices=("auto", "asgi3", "asgi2"),
        help="Select ASGI3 or ASGI2 as the application interface.",
        refused=(("wsgi", "corral serves ASGI only; wrap a WSGI app with an adapter such as"
                  " a2wsgi's WSGIMiddleware"),),
    )
    lifespan: str = setting(
        "auto", "--lifespan", kind="choice", choices=("auto", "on", "off"),
        help="Lifespan implementation.",
    )
    root_path: str = setting(
        "", "--root-path",
        help="Set the ASGI 'root_path' for applications submounted below a given URL path.",
    )
    env_file: str | None = setting(None, "--env-file", help="Environment configuration file.")
    reset_contextvars: bool = setting(
        False, "--reset-contextvars", kind="flag",
        help="Run each ASGI request in a fresh contextvars.Context. Hides context set in"
        " the lifespan.",
    )
    preload: bool = setting(
        False, "--preload", kind="flag",
        help="Import the app once in the master before forking workers (copy-on-write).",
    )

    # --- implementations -------------------------------------------------------------
    loop: str = setting(
        "auto", "--loop", kind="choice", choices=("auto", "asyncio", "uvloop"),
        help="Event loop implementation.",
    )
    http: str = setting(
        "auto", "--http", kind="choice", choices=("auto", "httptools", "h11"),
        help="Accepted for uvicorn's scripts: corral parses HTTP/1.1 with its own strict"
        " parser whichever is given (httptools and h11 check it in its tests).",
    )
    ws: str = setting(
        "auto", "--ws", kind="choice",
        choices=("auto", "none", "websockets", "websockets-sansio"),
        help="WebSocket protocol implementation.",
        refused=(("wsproto", "corral implements WebSockets on 'websockets' only;"
                  " use --ws websockets"),),
    )
    ws_max_size: int = setting(
        16 * 1024 * 1024, "--ws-max-size", kind="int", check=positive,
        help="WebSocket max size message in bytes.",
    )
    ws_max_queue: int = setting(
        32, "--ws-max-queue", kind="int", check=positive,
        help="The maximum length of the WebSocket message queue.",
    )
    ws_ping_interval: float | None = setting(
        20.0, "--ws-ping-interval", kind="float", check=non_negative,
        help="WebSocket ping interval in seconds (0 disables).",
    )
    ws_ping_timeout: float | None = setting(
        20.0, "--ws-ping-timeout", kind="float", check=non_negative,
        help="WebSocket ping timeout in seconds (0 disables).",
    )
    ws_per_message_deflate: bool = setting(
        True, "--ws-per-message-deflate", kind="choice", choices=("true", "false"),
        help="WebSocket per-message-deflate compression.",
    )
    h11_max_incomplete_event_size: int | None = setting(
        None, "--h11-max-incomplete-event-size", kind="int", check=positive,
        help="Maximum size of an incomplete HTTP request head (kept for uvicorn"
        " compatibility; same as --limit-request-header-size).",
    )

    # --- process model ---------------------------------------------------------------
    workers: int | None = setting(
        None, "--workers", "-w", kind="auto_int", fallback_env=("WEB_CONCURRENCY",),
        check=positive, metavar="N|auto",
        help="Number of worker processes under a supervising master ('auto': the CPUs the"
        " container may use). Without it corral runs as a single process. (-w as in gunicorn)",
    )
    limit_max_requests: int | None = setting(
        None, "--limit-max-requests", "--max-requests", kind="int", check=positive,
        help="Maximum number of requests a worker serves before it is replaced."
        " (--max-requests as in gunicorn)",
    )
    limit_max_requests_jitter: int = setting(
        0, "--limit-max-requests-jitter", "--max-requests-jitter", kind="int",
        check=non_negative,
        help="Add a random 0..J to --limit-max-requests so workers don't recycle together."
        " (--max-requests-jitter as in gunicorn)",
    )
    limit_worker_memory: int | None = setting(
        None, "--limit-worker-memory", kind="size", check=positive, metavar="SIZE",
        help="Replace a worker whose unique memory (USS) exceeds this: MiB (512), a size"
        " (512MiB, 1GiB) or a share of the container's memory (20%).",
    )
    timeout_worker_healthcheck: float = setting(
        30.0, "--timeout-worker-healthcheck", kind="float", check=positive,
        help="Seconds without a heartbeat from a worker's event loop before it is killed.",
    )
    timeout_worker_boot: float = setting(
        60.0, "--timeout-worker-boot", kind="float", check=positive,
        help="Seconds a worker may take to import the app and finish lifespan startup.",
    )
    reload: bool = setting(False, "--reload", kind="flag", help="Enable auto-reload.")
    reload_dirs: tuple[str, ...] = setting(
        (), "--reload-dir", kind="multiple", help="Set reload directories explicitly."
    )
    reload_includes: tuple[str, ...] = setting(
        (), "--reload-include", kind="multiple", help="Set glob patterns to include."
    )
    reload_excludes: tuple[str, ...] = setting(
        (), "--reload-exclude", kind="multiple", help="Set glob patterns to exclude."
    )
    reload_delay: float = setting(
        0.25, "--reload-delay", kind="float", check=non_negative,
        help="Delay between previous and next check if application needs to be reloaded.",
    )

    # --- connections and limits ------------------------------------------------------
    limit_concurrency: int | None = setting(
        None, "--limit-concurrency", kind="int", check=positive,
        help="Maximum number of concurrent connections or tasks per serving process before"
        " issuing HTTP 503 responses.",
    )
    timeout_keep_alive: float = setting(
        5.0, "--timeout-keep-alive", kind="float", check=non_negative,
        help="Close Keep-Alive connections if no new data is received within this timeout.",
    )
    timeout_graceful_shutdown: float = setting(
        30.0, "--timeout-graceful-shutdown", "--graceful-timeout", kind="float",
        check=non_negative,
        help="Maximum number of seconds to wait for in-flight requests on shutdown."
        " (--graceful-timeout as in gunicorn)",
    )
    # Lifespan shutdown runs after the drain; apps close pools there, which is quick, so a
    # bounded allowance keeps a stuck shutdown hook from holding a stop forever.
    timeout_lifespan_shutdown: float = setting(
        10.0, "--timeout-lifespan-shutdown", kind="float", check=non_negative,
        help="Maximum number of seconds the app's lifespan shutdown may take.",
    )
    timeout_shutdown_delay: float = setting(
        0.0, "--timeout-shutdown-delay", kind="float", check=non_negative,
        help="On SIGTERM keep serving this many seconds (with Connection: close) before"
        " stopping, so load balancers can take the instance out of rotation.",
    )
    # Per-line limits only stop one absurd line; the whole-head limit below is what bounds
    # memory. They are set above what real traffic sends: 9 KB URLs (signed links, long
    # query strings), 10 KB cookies and 9 KB bearer tokens, 120 headers behind a chain of
    # proxies, all of which uvicorn serves. gunicorn's older 8190/8190/100 refused them.
    limit_request_line: int = setting(
        16384, "--limit-request-line", kind="int", check=positive,
        help="Maximum size of the request line in bytes (414 above it).",
    )
    limit_request_fields: int = setting(
        200, "--limit-request-fields", kind="int", check=positive,
        help="Maximum number of header fields in a request (431 above it).",
    )
    limit_request_field_size: int = setting(
        32768, "--limit-request-field-size", kind="int", check=positive,
        hidden_aliases=("--limit-request-field_size",),
        help="Maximum size of one header field in bytes (431 above it).",
    )
    # 64 KiB bounds the memory one connection can pin before the app sees anything; nginx's
    # large_client_header_buffers default (4 x 8 KiB) is smaller, so real clients fit.
    limit_request_header_size: int = setting(
        65536, "--limit-request-header-size", kind="int", check=positive,
        help="Maximum size of the whole request head in bytes (431 above it).",
    )
    limit_request_body: int = setting(
        0, "--limit-request-body", kind="int", check=non_negative,
        help="Maximum request body size in bytes; 0 means unlimited (413 above it).",
    )
    # 30 s for the head stops slowloris clients while tolerating very slow mobile links.
    timeout_request_header: float = setting(
        30.0, "--timeout-request-header", kind="float", check=positive,
        help="Seconds a client may take to send a complete request head (408 after it).",
    )
    timeout_request_body: float = setting(
        60.0, "--timeout-request-body", kind="float", check=positive,
        help="Seconds a request body may stall without a byte arriving (408 after it).",
    )
    timeout_send: float = setting(
        60.0, "--timeout-send", kind="float", check=non_negative,
        help="Seconds a response may wait for a client that reads none of it before the"
        " connection is aborted (slow-read protection, like nginx's send_timeout; 0: never).",
    )

    # --- responses -------------------------------------------------------------------
    headers: tuple[tuple[str, str], ...] = setting(
        (), "--header", kind="multiple", metavar="NAME:VALUE", check=header_pairs,
        help="Specify custom default HTTP response headers as a Name:Value pair.",
    )
    server_header: bool = setting(
        True, "--server-header/--no-server-header", kind="bool",
        help="Enable/Disable default Server header.",
    )
    date_header: bool = setting(
        True, "--date-header/--no-date-header", kind="bool",
        help="Enable/Disable default Date header.",
    )
    health_path: str | None = setting(
        None, "--health-path", check=url_path,
        help="Answer this path with 200 (503 once stopping) without calling the app.",
    )

    # --- logging ---------------------------------------------------------------------
    log_level: str | None = setting(
        None, "--log-level", kind="choice",
        choices=("critical", "error", "warning", "info", "debug", "trace"),
        help="Log level. [default: info]",
    )
    access_log: bool = setting(
        True, "--access-log/--no-access-log", kind="bool", help="Enable/Disable access log."
    )
    use_colors: bool | None = setting(
        None, "--use-colors/--no-use-colors", kind="bool",
        help="Enable/Disable colorized logging.",
    )
    log_config: str | dict[str, Any] | None = setting(  # noqa: RUF009 (default is None)
        None, "--log-config",
        help="Logging configuration file. Supported formats: .ini, .json, .yaml.",
    )

    # --- proxies ---------------------------------------------------------------------
    proxy_headers: bool = setting(
        True, "--proxy-headers/--no-proxy-headers", kind="bool",
        help="Enable/Disable X-Forwarded-Proto, X-Forwarded-For and Forwarded to populate"
        " url scheme and remote address info.",
    )
    forwarded_allow_ips: str | None = setting(
        None, "--forwarded-allow-ips", fallback_env=("FORWARDED_ALLOW_IPS",),
        help="Comma separated list of IP addresses, IP networks, or literals (e.g. UNIX"
        " Socket path) to trust with proxy headers. Use '*' to trust all.  [default:"
        " 127.0.0.1,::1]",
    )
    proxy_protocol: bool = setting(
        False, "--proxy-protocol", kind="flag",
        help="Require a PROXY protocol (v1 or v2) header on every connection.",
    )

    # --- TLS -------------------------------------------------------------------------
    ssl_keyfile: str | None = setting(None, "--ssl-keyfile", help="SSL key file")
    ssl_certfile: str | None = setting(None, "--ssl-certfile", help="SSL certificate file")
    ssl_keyfile_password: str | None = setting(
        None, "--ssl-keyfile-password", help="SSL keyfile password"
    )
    ssl_version: int = setting(
        int(ssl.PROTOCOL_TLS_SERVER), "--ssl-version", kind="int",
        help="SSL version to use (see stdlib ssl module's)",
    )
    ssl_cert_reqs: int = setting(
        int(ssl.CERT_NONE), "--ssl-cert-reqs", kind="int",
        help="Whether client certificate is required (see stdlib ssl module's)",
    )
    ssl_ca_certs: str | None = setting(None, "--ssl-ca-certs", help="CA certificates file")
    ssl_ciphers: str = setting(
        "TLSv1", "--ssl-ciphers", help="Ciphers to use (see stdlib ssl module's)"
    )
    ssl_context_factory: Any = field(default=None, metadata={"option": Option((),
        "Python API only, as in uvicorn: factory(config, default_factory) -> ssl.SSLContext,"
        " called in each serving process; default_factory() builds the --ssl-* context.")})

    # --- running as a daemon ---------------------------------------------------------
    pid: str | None = setting(None, "--pid", help="Write the master's PID to this file.")
    user: str | None = setting(None, "--user", help="Switch to this user after binding.")
    group: str | None = setting(None, "--group", help="Switch to this group after binding.")
    umask: int | None = setting(
        None, "--umask", kind="octal", help="Set the process umask (octal, e.g. 027)."
    )

    # fmt: on

    def __post_init__(self) -> None:
        check_options(self)
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
    return declared_options(Config)
