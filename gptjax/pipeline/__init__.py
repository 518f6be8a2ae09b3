"""The pipeline on top of the library and the methods: the config schema, the workdir layout,
preparation, the stages and the report. ``python -m gptjax.main`` runs `run_pipeline`.

The names below load on first use, so that reading a workdir's files through a small module
of this package (``gptjax.pipeline.timings``, ``gptjax.pipeline.workdir``) does not import
the stages and JAX with it."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gptjax.pipeline.config import base_config, validate
    from gptjax.pipeline.preparation import Prepared, prepare
    from gptjax.pipeline.stages import (
        baselines_stage,
        collect_stage,
        report_stage,
        run_pipeline,
        simulate_stage,
    )
    from gptjax.pipeline.workdir import Workdir

_MODULE_OF = {
    "base_config": "config",
    "validate": "config",
    "Prepared": "preparation",
    "prepare": "preparation",
    "baselines_stage": "stages",
    "collect_stage": "stages",
    "report_stage": "stages",
    "run_pipeline": "stages",
    "simulate_stage": "stages",
    "Workdir": "workdir",
}

__all__ = [  # the keys of _MODULE_OF (tests/test_stage_timings.py checks)
    "Prepared",
    "Workdir",
    "base_config",
    "baselines_stage",
    "collect_stage",
    "prepare",
    "report_stage",
    "run_pipeline",
    "simulate_stage",
    "validate",
]


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    globals()[name] = value
    return value
