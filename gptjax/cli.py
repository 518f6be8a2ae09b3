"""How every command line of the project ends on an error: a mistake the user can make (a
config key, a value, a file, a path) ends with one line ``error: ...`` and exit status 2, the
traceback shown only with ``--debug``; Ctrl-C exits 130. Used by ``gptjax.main``,
``gptjax.query`` and ``gptjax.pipeline.seeds``; imports nothing heavy, so a command refuses
bad flags at once.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

# Errors a user's input can cause; anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, TypeError, KeyError, FileNotFoundError, TimeoutError, OSError)

T = TypeVar("T")


def _exit(status: int, immediate: bool) -> NoReturn:
    sys.stderr.flush()
    if immediate:
        # In a jax.distributed job a clean exit waits in the shutdown barrier for processes
        # that may be waiting for this one; leave at once (the others see it die).
        os._exit(status)
    sys.exit(status)


def fail(message: str, status: int = 2, *, immediate: bool = False) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    _exit(status, immediate)


def run_reporting_errors(fn: Callable[[], T], *, debug: bool = False, immediate: bool = False) -> T:
    """``fn()``, with user errors and Ctrl-C turned into the project's exits."""
    try:
        return fn()
    except KeyboardInterrupt:
        # By now every `with` block has unwound (the workdir lock released, half-written
        # files removed). Leave at once: a normal interpreter shutdown while XLA's threads are
        # still compiling or running was seen to crash (SIGSEGV) instead of exiting 130.
        print("interrupted", file=sys.stderr)
        sys.stdout.flush()
        _exit(130, immediate=True)
    except USER_ERRORS as err:
        if debug:
            raise
        fail(f"missing key {err}" if isinstance(err, KeyError) else str(err), immediate=immediate)


def quiet_orbax() -> None:
    """Orbax logs every checkpoint it opens at INFO: keep the terminal for progress and results."""
    from absl import logging

    logging.set_verbosity(logging.ERROR)
