"""Reading a GGUF (llama.cpp) file: metadata by key and float32 tensors by name.

No torch: the `gguf` package memory-maps the file and dequantises its blocks (Q4_1, Q8_0, ...)
with numpy. Only local files are read; nothing is ever fetched from a hub.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gguf
import numpy as np

_MISSING = object()


class GGUFFile:
    """A parsed GGUF file: metadata by key and float32 tensors by name, with errors that name
    the file (and the key or tensor) instead of the reader's bare messages."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise FileNotFoundError(
                f"GGUF file not found: {self.path} (only local files are read; "
                "nothing is downloaded from a hub)"
            )
        try:
            self.reader = gguf.GGUFReader(str(self.path))
        except Exception as err:  # the reader raises ValueError, IndexError, ... on bad bytes
            raise ValueError(
                f"{self.path}: not a readable GGUF file ({type(err).__name__}: {err})"
            ) from err
        self.tensors = {t.name: t for t in self.reader.tensors}

    def __contains__(self, key: str) -> bool:
        return key in self.reader.fields

    def get(self, key: str, default: Any = _MISSING) -> Any:
        """A metadata value as a Python object (str, int, float, bool or list)."""
        field = self.reader.fields.get(key)
        if field is None:
            if default is _MISSING:
                raise ValueError(f"{self.path}: metadata key {key!r} is missing")
            return default
        try:
            return field.contents()
        except Exception as err:
            raise ValueError(f"{self.path}: metadata key {key!r} is malformed ({err})") from err

    def get_int(self, key: str, default: Any = _MISSING) -> int:
        value = self.get(key, default)
        # Some architectures store per-layer lists (e.g. head counts); llama never does.
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(
                f"{self.path}: metadata key {key!r} should be an integer, got {value!r}"
            )
        return value

    def tensor(self, name: str) -> np.ndarray:
        """The named tensor, dequantised to float32, in row-major (``[out, in]``) order."""
        info = self.tensors.get(name)
        if info is None:
            raise ValueError(f"{self.path}: tensor {name!r} is missing")
        try:
            values = gguf.quants.dequantize(info.data, info.tensor_type)
        except Exception as err:  # NotImplementedError for types gguf cannot dequantise
            raise ValueError(
                f"{self.path}: cannot dequantise tensor {name!r} of type "
                f"{info.tensor_type.name} ({err})"
            ) from err
        shape = tuple(int(d) for d in reversed(info.shape.tolist()))
        values = np.asarray(values, dtype=np.float32)
        if values.size != int(np.prod(shape)):
            raise ValueError(
                f"{self.path}: tensor {name!r} holds {values.size} values, but its header "
                f"declares shape {shape}"
            )
        return values.reshape(shape)


def open_gguf(path: str | os.PathLike | GGUFFile) -> GGUFFile:
    return path if isinstance(path, GGUFFile) else GGUFFile(path)
