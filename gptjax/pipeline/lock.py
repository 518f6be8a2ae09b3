"""One writer per workdir: an exclusive ``flock`` on ``<workdir>/.lock``, held while the
pipeline runs. The kernel releases it when the process dies however it dies, so a lock is
never stale; the file names its owner (pid and host) for the message a second process gets.
With several processes of one ``--distributed`` job, process 0 holds it for all of them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def workdir_lock(path: Path) -> Iterator[None]:
    """Hold ``path`` (e.g. ``<workdir>/.lock``) while the block runs; ValueError naming the
    owner when another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _owner(fd)
            os.close(fd)
            raise ValueError(
                f"workdir {path.parent} is in use by process {owner.get('pid', '?')} on "
                f"{owner.get('host', '?')} (lock file {path}); wait for it to finish"
            ) from None
        # The previous holder may have removed the file between our open and our lock: then
        # we hold a lock on a file nobody else will see; open the current one again.
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
        yield
    finally:
        path.unlink(missing_ok=True)  # while still holding it: no one can take the old file
        os.close(fd)


def _owner(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}
