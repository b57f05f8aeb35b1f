"""Running outside a service manager: pidfile, privilege drop and umask.

The order matters and is the caller's (``serve_config``): apply the umask first (it shapes the
UNIX socket file), bind the listeners, write the pidfile while still privileged, drop to
``--user``/``--group``, and only then load the application, so no application code ever runs
as root.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
from dataclasses import dataclass

from corral.errors import ConfigError, StartupError

logger = logging.getLogger("corral.error")


# --- umask -------------------------------------------------------------------------------
def apply_umask(umask: int | None) -> int | None:
    """Set the process umask when configured; returns the previous one (None if untouched)."""
    if umask is None:
        return None
    return os.umask(umask)


# --- pidfile -----------------------------------------------------------------------------
def _read_pid(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError("--pid", f"cannot read {path}: {exc.strerror}") from None
    try:
        return int(text)
    except ValueError:
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_pidfile(path: str, pid: int | None = None, owner: Identity | None = None) -> None:
    """Write ``pid`` (this process by default) to ``path`` atomically.

    A pidfile naming another live process means a second instance: refused rather than
    overwritten. A stale one (its process is gone) is replaced. With ``owner``, the file is
    handed to the user corral will run as, so it can still be emptied at exit.
    """
    pid = os.getpid() if pid is None else pid
    existing = _read_pid(path)
    if existing == pid:
        return  # already ours: a master re-executed in place keeps its pid and its file
    if existing is not None and _alive(existing):
        raise ConfigError("--pid", f"{path} names process {existing}, which is still running")
    temporary = f"{path}.{pid}.tmp"
    try:
        with open(temporary, "w") as f:
            f.write(f"{pid}\n")
        if owner is not None and os.geteuid() == 0:
            os.chown(temporary, owner.uid, owner.gid)
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise ConfigError("--pid", f"cannot write {path}: {exc.strerror}") from None


def remove_pidfile(path: str, pid: int | None = None) -> bool:
    """Remove the pidfile if it still names ``pid``; returns whether it is gone.

    Another process's pidfile (a newer instance wrote its own) is left alone. After a
    privilege drop the directory may no longer be writable; the file is then emptied, which
    pid readers treat as "not running".
    """
    pid = os.getpid() if pid is None else pid
    try:
        if _read_pid(path) != pid:
            return False
    except ConfigError:
        return False
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return True
    except PermissionError:
        try:
            with open(path, "w"):
                pass
        except OSError as exc:
            logger.warning("Could not remove pidfile %s: %s", path, exc.strerror)
            return False
        return True
    except OSError as exc:
        logger.warning("Could not remove pidfile %s: %s", path, exc.strerror)
        return False


# --- privileges --------------------------------------------------------------------------
@dataclass(frozen=True)
class Identity:
    """Who to become: the user's name (for supplementary groups), uid and gid."""

    name: str | None
    uid: int
    gid: int


def resolve_identity(user: str | None, group: str | None) -> Identity | None:
    """Turn ``--user``/``--group`` (names or numeric ids) into ids; None when neither is set.

    The group defaults to the user's primary group. Unknown names are configuration errors,
    found before anything is bound.
    """
    if user is None and group is None:
        return None
    name: str | None = None
    if user is None:
        uid = os.getuid()
        primary = os.getgid()
    else:
        try:
            entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        except KeyError:
            if not user.isdigit():
                raise ConfigError("--user", f"no such user {user!r}") from None
            if group is None:
                # Falling back to our own gid would keep root's group after the drop.
                problem = f"uid {user} has no passwd entry; give --group too"
                raise ConfigError("--user", problem) from None
            uid, primary = int(user), -1
        else:
            name, uid, primary = entry.pw_name, entry.pw_uid, entry.pw_gid
    if group is None:
        gid = primary
    elif group.isdigit():
        gid = int(group)
    else:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise ConfigError("--group", f"no such group {group!r}") from None
    return Identity(name, uid, gid)


def drop_privileges(identity: Identity | None) -> None:
    """Become ``identity``: supplementary groups, then the gid, then the uid (that order,
    because after setuid the process may no longer change its groups).

    Not running as root, switching to the identity already held is a no-op and any other
    switch is refused. After the switch, regaining root must be impossible; it is checked.
    """
    if identity is None:
        return
    if os.geteuid() != 0:
        if (os.getuid(), os.getgid()) == (identity.uid, identity.gid):
            return
        raise StartupError("--user/--group need corral to be started as root")
    if identity.name is not None:
        os.initgroups(identity.name, identity.gid)
    else:
        os.setgroups([identity.gid])
    os.setgid(identity.gid)
    os.setuid(identity.uid)
    if identity.uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            pass
        else:
            raise StartupError("privilege drop failed: the process could become root again")
    logger.info("Running as uid %d, gid %d", identity.uid, identity.gid)


def pid1_warning(supervised: bool, pid: int | None = None) -> str | None:
    """The warning for single-process mode as PID 1 (a container entrypoint), else None.

    PID 1 inherits every orphaned process in its namespace; only the master reaps those.
    """
    if supervised or (os.getpid() if pid is None else pid) != 1:
        return None
    return (
        "Running as PID 1 in single-process mode: orphaned child processes will not be"
        " reaped. Use --workers 1 (the master reaps them) or an init such as tini."
    )
