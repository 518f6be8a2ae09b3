"""Waiting for what other processes of a multi-host job write (the base model, their runs)."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(
    done: Callable[[], bool], what: str, timeout_s: float = 24 * 3600, poll_s: float = 0.5
) -> None:
    """Poll ``done()`` until it holds; TimeoutError naming ``what`` after ``timeout_s``."""
    start = time.monotonic()
    while not done():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"waited {timeout_s:.0f} s for {what}")
        time.sleep(poll_s)
