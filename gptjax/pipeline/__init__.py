"""The pipeline on top of the library and the methods: the config schema, the workdir layout,
preparation, the stages and the report. ``python -m gptjax.main`` runs `run_pipeline`."""

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

__all__ = [
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
