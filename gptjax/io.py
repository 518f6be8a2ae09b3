"""Atomic file writes and strict JSON: the one implementation every module writes through.

A reader sees a whole file or none of it: data goes to a temporary file in the same folder,
is flushed to disk, then renamed over the target. The temporary file is created with mode
0666 so the process's umask applies, as for any ordinary file.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import secrets
from pathlib import Path
from typing import Any

import numpy as np


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, fsync, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def json_safe(x: Any) -> Any:
    """NaN / inf → None, NumPy scalars → Python numbers, tuples → lists: strict JSON."""
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    if isinstance(x, bool | np.bool_):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(float(x)) else None
    return x


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int = 2) -> None:
    """Strict JSON (NaN written as null), keys sorted, one trailing newline."""
    text = json.dumps(json_safe(obj), indent=indent, sort_keys=True, allow_nan=False)
    atomic_write_text(path, text + "\n")


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array))
    atomic_write_bytes(path, buffer.getvalue())


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a damaged one is a ValueError that names it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable JSON file ({err})") from err


def fingerprint(*arrays: Any) -> str:
    """A short hash of arrays' shapes, dtypes and bytes (cache keys, data identity)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tree_digest(path: str | os.PathLike, exclude: tuple[str, ...] = ()) -> str:
    """sha256 over every file below ``path`` (relative names and bytes; top-level names in
    ``exclude`` left out), for folders written by other libraries (Orbax checkpoints) that
    carry no checksum of their own."""
    root = Path(path)
    h = hashlib.sha256()
    files = (p for p in root.rglob("*") if p.is_file())
    for file in sorted(f for f in files if f.relative_to(root).parts[0] not in exclude):
        h.update(str(file.relative_to(root)).encode() + b"\0")
        h.update(file_digest(file).encode())
    return h.hexdigest()
