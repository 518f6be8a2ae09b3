"""GPTfluence and Simfluence simulators of fine-tuning dynamics (see docs/simulator.md).

The main entry points, re-exported here::

    fit(model_kind, curricula, y, train_features, test_features, train_runs, val_runs,
        config) -> FittedSimulator      # .rollout(curricula, y_init), .save / .restore
    fit_or_restore(kind, config, ..., model_dir)   # fit once, reuse while nothing changed

Features (``simulator.features``) and influence queries (``simulator.influence``) are
imported from their modules. Scores come from the library's harness, ``gptjax.evaluation``.
"""

from .fitted import SIMFLUENCE_DEFAULTS, FitConfig, FittedSimulator, RolloutCall
from .training import KERNEL_METHODS, METHODS, fit, fit_or_restore, method_config

__all__ = [
    "KERNEL_METHODS",
    "METHODS",
    "SIMFLUENCE_DEFAULTS",
    "FitConfig",
    "FittedSimulator",
    "RolloutCall",
    "fit",
    "fit_or_restore",
    "method_config",
]
