"""Command line: run the stages of a config in a workdir (a second invocation resumes).

    python -m gptjax.main --config configs/demo.py --workdir workdirs/demo
    python -m gptjax.main --config configs/demo.py --config.collect.num_runs=8

Multi-host: add --distributed (jax.distributed.initialize(); each process collects its own
share of the runs; process 0 then runs the remaining stages).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (default: workdirs/<config>).")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize().")
_COORDINATOR = flags.DEFINE_string("coordinator", None, "host:port of process 0 (distributed).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Process count (distributed).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (distributed).")
flags.mark_flags_as_required(["config"])


def main(argv: list[str]) -> None:
    del argv
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.ERROR)  # Orbax logs every checkpoint it opens
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
    try:
        run_pipeline(_CONFIG.value, workdir)
    except (ValueError, FileNotFoundError, TimeoutError) as err:
        print(f"error: {err}", file=sys.stderr)
        if _DISTRIBUTED.value:
            # A clean exit would wait in jax.distributed's shutdown barrier for processes
            # that may be waiting for this one; leave at once (the others see it die).
            sys.stderr.flush()
            os._exit(2)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
