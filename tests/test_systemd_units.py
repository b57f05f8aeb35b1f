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


def exec_start_config(monkeypatch: pytest.MonkeyPatch) -> Config:
    """The Config corral's own command line makes of the service's ExecStart (not served)."""
    import corral.cli

    argv = shlex.split(parse_unit(SERVICE)["Service.ExecStart"][0])
    assert argv[:2] == ["/usr/bin/env", "corral"]
    seen: list[Config] = []
    monkeypatch.setattr(corral.cli, "serve", lambda config: seen.append(config) or 0)
    with pytest.raises(SystemExit) as info:
        corral.cli.main(argv[2:])
    assert info.value.code == 0
    return seen[0]


def test_exec_start_is_a_valid_supervised_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """ExecStart parses with corral's CLI and runs a master (which owns sd_notify and reloads)."""
    config = exec_start_config(monkeypatch)
    assert config.supervised
    assert config.host is None and config.port is None  # the sockets come from corral.socket


def test_stop_timeout_exceeds_corrals_own_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """TimeoutStopSec is above shutdown delay + graceful timeout + lifespan allowance."""
    config = exec_start_config(monkeypatch)
    bound = (
        config.timeout_shutdown_delay
        + config.timeout_graceful_shutdown
        + config.timeout_lifespan_shutdown
    )
    assert seconds(parse_unit(SERVICE)["Service.TimeoutStopSec"][0]) > bound


def test_start_timeout_covers_a_worker_boot(monkeypatch: pytest.MonkeyPatch) -> None:
    """TimeoutStartSec leaves room for --timeout-worker-boot before systemd gives up."""
    config = exec_start_config(monkeypatch)
    assert seconds(parse_unit(SERVICE)["Service.TimeoutStartSec"][0]) > config.timeout_worker_boot


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
