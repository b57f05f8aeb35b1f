"""The shipped systemd units: accepted by systemd-analyze and carrying the settings we rely on."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from corral.config import Config

UNITS = Path(__file__).resolve().parent.parent / "systemd"
SOCKET = UNITS / "corral.socket"
SERVICE = UNITS / "corral.service"

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def parse_unit(path: Path) -> dict[str, list[str]]:
    """``Section.Key`` -> every value assigned (systemd keys may repeat)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return settings


def verify(*units: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=units[0].parent,
    )


def seconds(value: str) -> float:
    """A plain systemd time span such as "50", "50s" or "1min"."""
    for suffix, scale in (("min", 60.0), ("ms", 0.001), ("s", 1.0)):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * scale
    return float(value)


@needs_analyze
def test_units_verify_without_any_warning() -> None:
    """systemd-analyze verify accepts both units and prints nothing at all."""
    result = verify(SOCKET, SERVICE)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""
    assert result.stdout.strip() == ""


@needs_analyze
def test_verify_check_detects_a_broken_unit(tmp_path: Path) -> None:
    """The verify check can fail: an unknown directive in a copy of the service is reported."""
    shutil.copy(SOCKET, tmp_path / "corral.socket")
    broken = SERVICE.read_text().replace("[Service]\n", "[Service]\nKillMood=mixed\n", 1)
    (tmp_path / "corral.service").write_text(broken)
    result = verify(tmp_path / "corral.socket", tmp_path / "corral.service")
    assert "KillMood" in result.stderr


def test_service_is_a_notify_service_reloaded_with_sighup() -> None:
    """Type=notify with NotifyAccess=main, SIGHUP reload, notify-reload mentioned for >= 253."""
    unit = parse_unit(SERVICE)
    assert unit["Service.Type"] == ["notify"]
    assert unit["Service.NotifyAccess"] == ["main"]
    assert unit["Service.ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    text = SERVICE.read_text()
    assert "Type=notify-reload" in text and "253" in text


def test_service_stop_and_failure_policy() -> None:
    """KillMode=mixed, OOMPolicy=continue and a watchdog, each explained in a comment."""
    unit = parse_unit(SERVICE)
    assert unit["Service.KillMode"] == ["mixed"]
    assert unit["Service.OOMPolicy"] == ["continue"]
    assert seconds(unit["Service.WatchdogSec"][0]) > 0
    comments = "\n".join(
        line for line in SERVICE.read_text().splitlines() if line.lstrip().startswith("#")
    )
    for topic in ("SIGTERM goes to the master", "OOM", "WATCHDOG=1", "Only the master"):
        assert topic in comments


def test_stop_timeout_exceeds_corrals_own_bound() -> None:
    """TimeoutStopSec is above shutdown delay + graceful timeout + lifespan allowance."""
    unit = parse_unit(SERVICE)
    argv = shlex.split(unit["Service.ExecStart"][0])
    defaults = Config()

    def flag(name: str, default: float) -> float:
        return float(argv[argv.index(name) + 1]) if name in argv else default

    bound = (
        flag("--timeout-shutdown-delay", defaults.timeout_shutdown_delay)
        + flag("--timeout-graceful-shutdown", defaults.timeout_graceful_shutdown)
        + flag("--timeout-lifespan-shutdown", defaults.timeout_lifespan_shutdown)
    )
    assert seconds(unit["Service.TimeoutStopSec"][0]) > bound


def test_service_is_hardened() -> None:
    """The service runs unprivileged with the usual sandboxing switched on."""
    unit = parse_unit(SERVICE)
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "RestrictSUIDSGID": "yes",
    }
    for key, value in expected.items():
        assert unit[f"Service.{key}"] == [value], key
    assert unit["Service.User"] != ["root"]
    assert unit["Service.CapabilityBoundingSet"] == [""]


def test_socket_unit_passes_named_sockets() -> None:
    """The socket unit listens on TCP and a UNIX path and names its descriptors."""
    unit = parse_unit(SOCKET)
    listens = unit["Socket.ListenStream"]
    assert any(value.startswith("/") for value in listens)
    assert any(not value.startswith("/") for value in listens)
    assert unit["Socket.FileDescriptorName"] == ["http"]
    assert unit["Install.WantedBy"] == ["sockets.target"]
    # The service takes its sockets from here, not from --host/--port.
    argv = shlex.split(parse_unit(SERVICE)["Service.ExecStart"][0])
    assert "--host" not in argv and "--port" not in argv
