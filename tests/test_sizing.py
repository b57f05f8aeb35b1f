"""--workers auto and --limit-worker-memory shares/units, read from fake cgroup files.

CORRAL_CGROUP_ROOT (documented in corral.sizing and the README) points corral at a folder
standing in for /sys/fs/cgroup.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from corral import sizing
from corral.errors import ConfigError

from tests.test_cli_e2e import BANNER, start  # noqa: F401 (fixture)
from tests.test_configfile import invoke  # noqa: F401 (fixture)

GIB = 1024**3


def cgroup(tmp_path: Path, files: dict[str, str] | None = None) -> dict[str, str]:
    """A fake cgroup folder holding ``files`` (relative path -> text), as the environment."""
    root = tmp_path / "cgroup"
    for name, text in (files or {}).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    root.mkdir(exist_ok=True)
    return {"CORRAL_CGROUP_ROOT": str(root)}


def resolved(settings: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    sizing.resolve(settings, env)
    return settings


def test_cgroup_v2_cpu_quota(tmp_path: Path) -> None:
    env = cgroup(tmp_path, {"cpu.max": "350000 100000"})
    settings = resolved({"workers": "auto"}, env)
    assert settings["workers"] == 4  # rounded up
    assert settings["notices"] == (("info", "4 workers (cgroup cpu.max 350000/100000)"),)


def test_cgroup_v1_cpu_quota(tmp_path: Path) -> None:
    env = cgroup(tmp_path, {"cpu/cpu.cfs_quota_us": "200000", "cpu/cpu.cfs_period_us": "100000"})
    assert resolved({"workers": "auto"}, env)["workers"] == 2


def test_no_quota_falls_back_to_affinity(tmp_path: Path) -> None:
    env = cgroup(tmp_path, {"cpu.max": "max 100000"})
    settings = resolved({"workers": "auto"}, env)
    assert settings["workers"] == len(os.sched_getaffinity(0))
    assert "CPU affinity" in settings["notices"][0][1]


@pytest.mark.parametrize(
    ("value", "mib"),
    [(512, 512), ("512", 512), ("512MiB", 512), ("1GiB", 1024), ("1.5GiB", 1536),
     ("512Mi", 512), ("1G", 1024), ("1000MB", 953), ("25%", 1024)],
)  # fmt: skip
def test_memory_sizes_and_shares(tmp_path: Path, value: Any, mib: int) -> None:
    env = cgroup(tmp_path, {"memory.max": str(4 * GIB)})
    settings = resolved({"limit_worker_memory": value, "workers": 1}, env)
    assert settings["limit_worker_memory"] == mib


def test_memory_share_of_a_v1_limit(tmp_path: Path) -> None:
    env = cgroup(tmp_path, {"memory/memory.limit_in_bytes": str(2 * GIB)})
    settings = resolved({"limit_worker_memory": "10%", "workers": 1}, env)
    assert settings["limit_worker_memory"] == 204
    assert "of 2048 MiB (cgroup v1 memory.limit_in_bytes)" in settings["notices"][0][1]


def test_warns_when_workers_plus_a_replacement_exceed_the_container(tmp_path: Path) -> None:
    env = cgroup(tmp_path, {"memory.max": str(2 * GIB)})
    settings = resolved({"limit_worker_memory": 512, "workers": 4}, env)
    [(level, message)] = settings["notices"]
    assert level == "warning"
    assert "512 MiB x (4 workers + 1 overlapping replacement) = 2560 MiB" in message
    assert "2048 MiB (cgroup memory.max)" in message
    assert "notices" not in resolved({"limit_worker_memory": 400, "workers": 4}, env)


@pytest.mark.parametrize("value", ["lots", "0", "0MiB", "150%", "-5"])
def test_bad_sizes_are_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="--limit-worker-memory"):
        sizing.resolve({"limit_worker_memory": value}, cgroup(tmp_path))


def test_cli_and_web_concurrency_auto(invoke: Any, tmp_path: Path) -> None:  # noqa: F811
    env = cgroup(tmp_path, {"cpu.max": "300000 100000", "memory.max": str(GIB)})
    result, config = invoke(["main:app", "--workers", "auto", "--limit-worker-memory", "20%"], env)
    assert result.exit_code == 0, result.output
    assert config is not None and config.workers == 3 and config.limit_worker_memory == 204
    _, config = invoke(["main:app"], env | {"WEB_CONCURRENCY": "auto"})
    assert config is not None and config.workers == 3
    result, _ = invoke(["main:app", "--workers", "lots"], env)
    assert result.exit_code == 2 and "--workers" in result.output


def test_banner_says_what_it_found(start: Any, tmp_path: Path) -> None:  # noqa: F811
    env = cgroup(tmp_path, {"cpu.max": "200000 100000"})
    server = start("--workers", "auto", env=env)
    server.wait_for(r"2 workers \(cgroup cpu.max 200000/100000\)")
    server.wait_for(BANNER)
    server.wait_for(r"Started worker 2 ")
    server.proc.terminate()
    code, stderr = server.finish()
    assert code == 0, stderr
