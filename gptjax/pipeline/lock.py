"""One writer per workdir: a lock file naming its owner (pid and host).

A second process on the same workdir is refused with a message naming the owner; a lock left
by a process that no longer runs (same host) is taken over. With several processes of one
``--distributed`` job, process 0 holds the lock for all of them.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def workdir_lock(path: Path) -> Iterator[None]:
    """Hold ``path`` (e.g. ``<workdir>/.lock``) while the block runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            try:
                owner = json.loads(path.read_text())
                pid, host = int(owner["pid"]), str(owner["host"])
            except (OSError, ValueError, KeyError, TypeError):
                owner, pid, host = None, -1, me["host"]  # unreadable: left by a crash mid-write
            if host == me["host"] and not _alive(pid):
                path.unlink(missing_ok=True)  # stale: its owner is gone
                continue
            raise ValueError(
                f"workdir {path.parent} is in use by process {pid} on {host} (lock file "
                f"{path}); wait for it to finish, or delete the lock if that process is gone"
            ) from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:
        raise ValueError(f"could not take the workdir lock {path}")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
