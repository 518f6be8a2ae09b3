"""Command line: run the stages of a config in a workdir (a second invocation resumes).

    python -m gptjax.main --config configs/demo.py --workdir workdirs/demo
    python -m gptjax.main --config configs/demo.py --config.collect.num_runs=8

Multi-host: add --distributed (jax.distributed.initialize(); each process collects its own
share of the runs; process 0 then runs the remaining stages).

A mistake the user can make (a config key, a value, a file, a path) ends with one line
``error: ...`` and exit status 2 (``--debug`` shows the traceback); Ctrl-C exits 130.
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

from absl import app, flags
from ml_collections import config_flags

from gptjax.cli import fail, quiet_orbax, run_reporting_errors

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (default: workdirs/<config>).")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize().")
_COORDINATOR = flags.DEFINE_string("coordinator", None, "host:port of process 0 (distributed).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Process count (distributed).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (distributed).")
_DEBUG = flags.DEFINE_bool("debug", False, "Show the traceback of an error.")


def _fail(message: str) -> NoReturn:
    fail(message, immediate=_DISTRIBUTED.present and _DISTRIBUTED.value)


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's parsing, with config-file problems (a syntax error, no get_config, an override
    of a key the config does not have) reported as one line instead of a traceback."""
    try:
        argv = flags.FLAGS(argv)
    except flags.Error as err:
        _fail(str(err))
    except Exception as err:  # raised while loading the config file or applying overrides
        if "--debug" in argv:
            raise
        overrides = [
            a.split("=", 1)[0][len("--config.") :] for a in argv if a.startswith("--config.")
        ]
        unknown = [k for k in overrides if f"'{k.rsplit('.', 1)[-1]}'" in str(err)]
        if isinstance(err, AttributeError | KeyError) and unknown:
            _fail(f"unknown config key {unknown[0]!r} (set on the command line)")
        _fail(f"config {_config_path(argv)}: {type(err).__name__}: {err}")
    if _CONFIG.value is None:
        _fail("--config is required (e.g. --config configs/demo.py)")
    return argv


def _config_path(argv: list[str]) -> str:
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return "?"


def main(argv: list[str]) -> None:
    del argv
    if not flags.FLAGS["verbosity"].present:
        quiet_orbax()
    run_reporting_errors(_run, debug=_DEBUG.value, immediate=_DISTRIBUTED.value)


def _run() -> None:
    if _DISTRIBUTED.value:
        import jax

        jax.distributed.initialize(
            coordinator_address=_COORDINATOR.value,
            num_processes=_NUM_PROCESSES.value,
            process_id=_PROCESS_ID.value,
        )
    from gptjax.pipeline import run_pipeline

    workdir = _WORKDIR.value or str(
        Path("workdirs") / Path(flags.FLAGS["config"].config_filename).stem
    )
    run_pipeline(_CONFIG.value, workdir)


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
