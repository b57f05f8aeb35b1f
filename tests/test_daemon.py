"""Pidfile lifecycle, --user/--group privilege drop and --umask (server/daemon.py)."""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from corral.daemon import (
    Identity,
    apply_umask,
    drop_privileges,
    pid1_warning,
    remove_pidfile,
    resolve_identity,
    write_pidfile,
)
from corral.errors import ConfigError, StartupError

NOBODY = pwd.getpwnam("nobody")
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="privilege drop needs root")


def in_child(action: Callable[[], object]) -> object:
    """Run ``action`` in a forked child and return its JSON-able result (or its error text)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.close(read_end)
            try:
                result: object = {"ok": action()}
            except Exception as exc:
                result = {"error": f"{type(exc).__name__}: {exc}"}
            os.write(write_end, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    return json.loads(b"".join(chunks))


def identity_now() -> dict[str, object]:
    can_regain_root = True
    try:
        os.setuid(0)
    except PermissionError:
        can_regain_root = False
    return {
        "uid": os.getuid(),
        "euid": os.geteuid(),
        "gid": os.getgid(),
        "egid": os.getegid(),
        "groups": sorted(os.getgroups()),
        "can_regain_root": can_regain_root,
    }


@pytest.fixture
def world_readable_dir() -> Iterator[Path]:
    """A root-owned 0755 directory that nobody can read but not write (tmp_path is 0700)."""
    directory = Path(tempfile.mkdtemp(prefix="corral-daemon-", dir="/tmp"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


# --- pidfile ---------------------------------------------------------------------------------
def test_pidfile_written_and_removed(tmp_path: Path) -> None:
    """The pidfile holds our pid and a newline, and is removed at the end."""
    path = tmp_path / "corral.pid"
    write_pidfile(str(path))
    assert path.read_text() == f"{os.getpid()}\n"
    assert not list(tmp_path.glob("*.tmp"))
    assert remove_pidfile(str(path)) is True
    assert not path.exists()


def test_pidfile_of_a_live_process_is_refused(tmp_path: Path) -> None:
    """A pidfile naming another running process means a second instance: refused."""
    path = tmp_path / "corral.pid"
    path.write_text(f"{os.getppid()}\n")
    with pytest.raises(ConfigError) as info:
        write_pidfile(str(path))
    assert info.value.option == "--pid"
    assert "still running" in str(info.value)
    assert path.read_text() == f"{os.getppid()}\n"


def test_stale_pidfile_is_replaced(tmp_path: Path) -> None:
    """A pidfile left by a process that is gone is overwritten."""
    dead = in_child(os.getpid)
    assert isinstance(dead, dict)
    path = tmp_path / "corral.pid"
    path.write_text(f"{dead['ok']}\n")
    write_pidfile(str(path))
    assert path.read_text() == f"{os.getpid()}\n"


def test_rewriting_our_own_pidfile_is_a_no_op(tmp_path: Path) -> None:
    """A master re-executed in place (same pid) finds its own pidfile and keeps it."""
    path = tmp_path / "corral.pid"
    write_pidfile(str(path))
    write_pidfile(str(path))
    assert path.read_text() == f"{os.getpid()}\n"


def test_someone_elses_pidfile_is_not_removed(tmp_path: Path) -> None:
    """At exit only a pidfile still naming us is removed (a successor may have replaced it)."""
    path = tmp_path / "corral.pid"
    path.write_text("999999\n")
    assert remove_pidfile(str(path)) is False
    assert path.read_text() == "999999\n"


def test_unwritable_pidfile_is_a_config_error(tmp_path: Path) -> None:
    """A pidfile in a missing directory is a short error naming --pid."""
    with pytest.raises(ConfigError) as info:
        write_pidfile(str(tmp_path / "missing" / "corral.pid"))
    assert info.value.option == "--pid"
    assert "cannot write" in str(info.value)


@root_only
def test_pidfile_emptied_when_its_directory_is_not_writable_after_drop(
    world_readable_dir: Path,
) -> None:
    """After dropping to nobody the root-owned directory forbids unlink: the file is emptied."""
    path = world_readable_dir / "corral.pid"
    identity = resolve_identity("nobody", None)
    assert identity is not None

    def run() -> object:
        write_pidfile(str(path), owner=identity)
        owner = os.stat(path).st_uid
        drop_privileges(identity)
        return [owner, remove_pidfile(str(path))]

    assert in_child(run) == {"ok": [NOBODY.pw_uid, True]}
    assert path.read_text() == ""


# --- identities ------------------------------------------------------------------------------
def test_identity_by_name_uses_the_primary_group() -> None:
    """--user NAME resolves to its uid and primary gid."""
    assert resolve_identity("nobody", None) == Identity("nobody", NOBODY.pw_uid, NOBODY.pw_gid)


def test_identity_by_number_and_explicit_group() -> None:
    """Numeric --user and --group are accepted; --group overrides the primary group."""
    group = grp.getgrgid(0).gr_name
    assert resolve_identity(str(NOBODY.pw_uid), group) == Identity("nobody", NOBODY.pw_uid, 0)
    assert resolve_identity(None, "4242") == Identity(None, os.getuid(), 4242)
    assert resolve_identity("54321", "4242") == Identity(None, 54321, 4242)
    assert resolve_identity(None, None) is None


@pytest.mark.parametrize(
    ("user", "group", "option"),
    [
        ("no-such-user-corral", None, "--user"),
        ("nobody", "no-such-group-corral", "--group"),
        ("54321", None, "--user"),  # no passwd entry: without --group, root's gid would stay
    ],
)
def test_unknown_names_are_config_errors(user: str, group: str | None, option: str) -> None:
    """An unknown user or group is a configuration error naming the option."""
    with pytest.raises(ConfigError) as info:
        resolve_identity(user, group)
    assert info.value.option == option


@root_only
def test_privilege_drop_to_nobody_is_permanent() -> None:
    """Dropping to nobody sets uid, gid and supplementary groups; root can't be regained."""
    result = in_child(lambda: (drop_privileges(resolve_identity("nobody", None)), identity_now()))
    assert isinstance(result, dict)
    _, now = result["ok"]
    assert now == {
        "uid": NOBODY.pw_uid,
        "euid": NOBODY.pw_uid,
        "gid": NOBODY.pw_gid,
        "egid": NOBODY.pw_gid,
        "groups": sorted(
            {NOBODY.pw_gid} | {g.gr_gid for g in grp.getgrall() if "nobody" in g.gr_mem}
        ),
        "can_regain_root": False,
    }


@root_only
def test_privilege_drop_with_a_group_override() -> None:
    """--user nobody --group 4242 runs with gid 4242 and no root group left."""
    identity = resolve_identity("nobody", "4242")
    result = in_child(lambda: (drop_privileges(identity), identity_now()))
    assert isinstance(result, dict)
    _, now = result["ok"]
    assert now["gid"] == now["egid"] == 4242
    assert 0 not in now["groups"]


@root_only
def test_unprivileged_switch_is_refused_but_staying_is_fine() -> None:
    """Without root, asking for another identity is a StartupError; the current one is a no-op."""
    nobody = resolve_identity("nobody", None)

    def run() -> object:
        drop_privileges(nobody)
        drop_privileges(nobody)  # already there: nothing to do
        drop_privileges(Identity("root", 0, 0))
        return "switched back to root"

    result = in_child(run)
    assert result == {"error": "StartupError: --user/--group need corral to be started as root"}
    assert issubclass(StartupError, Exception)


# --- umask and PID 1 -------------------------------------------------------------------------
def test_umask_applies_to_new_files(tmp_path: Path) -> None:
    """--umask 027 makes new files rw-r-----; no umask leaves it untouched."""

    def run() -> object:
        assert apply_umask(None) is None
        apply_umask(0o027)
        (tmp_path / "f").write_text("x")
        return stat.S_IMODE(os.stat(tmp_path / "f").st_mode)

    assert in_child(run) == {"ok": 0o640}


def test_pid1_warning_only_for_single_process_mode() -> None:
    """As PID 1 without a master, the warning says orphans aren't reaped and names --workers 1."""
    warning = pid1_warning(supervised=False, pid=1)
    assert warning is not None
    assert "orphan" in warning and "--workers 1" in warning
    assert pid1_warning(supervised=True, pid=1) is None
    assert pid1_warning(supervised=False, pid=1234) is None


# --- corral end to end -------------------------------------------------------------------------
# corral started as root with --user nobody. The interpreter here lives under /root, which
# nobody cannot read, so the modules corral imports lazily are imported up front; the
# application itself is imported after the drop, from a directory nobody can read.
LAUNCH = r"""
import sys
import asyncio, email, h11, httptools, json, uvloop
import corral.cli, corral.loading, corral.main, corral.supervisor.master
import corral.supervisor.systemd, corral.worker.http1.protocol, corral.worker.process
import corral.worker.serving, corral.worker.supervised
corral.cli.main(sys.argv[1:])
"""

WHOAMI = """
import os


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = f"uid={os.getuid()} gid={os.getgid()} groups={sorted(os.getgroups())}"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body.encode()})
"""


@root_only
@pytest.mark.parametrize("workers", [None, 2], ids=["single", "master"])
def test_corral_binds_as_root_then_serves_as_nobody(
    world_readable_dir: Path, workers: int | None
) -> None:
    """--user nobody --pid: the app runs as nobody everywhere; the pidfile comes and goes."""
    from tests.test_activation import LogFile, http_get, stop, wait_for

    (world_readable_dir / "whoami.py").write_text(WHOAMI)
    run_dir = world_readable_dir / "run"
    run_dir.mkdir()
    os.chown(run_dir, NOBODY.pw_uid, NOBODY.pw_gid)  # like RuntimeDirectory=: removable
    pidfile = run_dir / "corral.pid"
    args = ["whoami:app", "--app-dir", str(world_readable_dir), "--port", "0"]
    args += ["--user", "nobody", "--pid", str(pidfile), "--umask", "027"]
    if workers:
        args += ["--workers", str(workers)]
    log = LogFile(world_readable_dir / "corral.log")
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, *args], stderr=log.handle, text=True)
    try:
        text = log.wait("running on http://") if not workers else log.wait("ready", workers)
        assert f"Running as uid {NOBODY.pw_uid}, gid {NOBODY.pw_gid}" in text
        port = int(re.search(r"running on http://127\.0\.0\.1:(\d+)", text).group(1))  # type: ignore[union-attr]
        assert pidfile.read_text() == f"{proc.pid}\n"
        assert os.stat(pidfile).st_uid == NOBODY.pw_uid
        status, _, body = http_get(("127.0.0.1", port))
        assert status == 200
        assert body.startswith(f"uid={NOBODY.pw_uid} gid={NOBODY.pw_gid} ")
        assert "0" not in body.split("groups=")[1].strip("[]").split(", ")
        for process in [psutil.Process(proc.pid), *psutil.Process(proc.pid).children()]:
            assert process.uids().real == process.uids().effective == NOBODY.pw_uid
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        wait_for(lambda: not pidfile.exists(), "the pidfile to be removed")
    finally:
        stop(proc, log)
