"""How every command line of the project ends on an error: a mistake the user can make (a
config key, a value, a file, a path) ends with one line ``error: ...`` and exit status 2, the
traceback shown only with ``--debug``; Ctrl-C exits 130. Used by ``gptjax.main``,
``gptjax.query`` and ``gptjax.pipeline.seeds``; imports nothing heavy, so a command refuses
bad flags at once.
"""

from __future__ import annotations

import _thread
import os
import signal
import sys
import time
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
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _redeliver_swallowed_interrupts(previous_hook)
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
    finally:
        sys.unraisablehook = previous_hook


def _redeliver_swallowed_interrupts(
    previous: Callable[[object], object],
) -> Callable[[object], object]:
    """An unraisable-exception hook that re-sends a Ctrl-C Python had to drop.

    A KeyboardInterrupt raised while Python runs a garbage-collector callback (JAX registers
    one), a ``__del__`` or a weakref callback cannot propagate: Python prints "Exception
    ignored in ..." and carries on, so the run went on to the end and exited 0 (seen in CI).
    Re-send it to the main thread from a new thread, so it is raised again at the next
    bytecode of ordinary code (and re-sent again should it land in such a callback twice).
    """

    def hook(unraisable) -> None:
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            # interrupt_main does nothing while SIGINT is ignored (a process started from a
            # background job inherits that) or at its OS default: let Python handle it.
            if not callable(signal.getsignal(signal.SIGINT)):
                try:
                    signal.signal(signal.SIGINT, signal.default_int_handler)
                except ValueError:  # not the main thread: only it may set handlers
                    pass
            # Not threading.Thread: its start() waits for the thread, and the re-sent
            # interrupt would then land in this hook, where it is dropped for good.
            _thread.start_new_thread(_interrupt_main_soon, ())
            return
        previous(unraisable)

    return hook


def _interrupt_main_soon() -> None:
    time.sleep(0.05)  # let the hook return first
    _thread.interrupt_main()


def quiet_orbax() -> None:
    """Orbax logs every checkpoint it opens at INFO: keep the terminal for progress and results."""
    from absl import logging

    logging.set_verbosity(logging.ERROR)
