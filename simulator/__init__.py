"""GPTfluence and Simfluence simulators of fine-tuning dynamics (see docs/simulator.md).

The main entry points, re-exported here::

    fit(model_kind, curricula, y, train_features, test_features, train_runs, val_runs,
        config) -> FittedSimulator      # .rollout(curricula, y_init), .save / .restore
    evaluate(pred, true, start=1)       # the metrics harness; persistence, mean_trajectory
    run_simulators(dyn, split, cfg, workdir)   # the pipeline stage (simulator.stage)

The encoder (``simulator.encoder``) and influence queries (``simulator.influence``) are
imported from their modules.
"""

from .metrics import evaluate, mean_trajectory, persistence, results_table
from .train import FitConfig, FittedSimulator, fit

__all__ = [
    "FitConfig",
    "FittedSimulator",
    "evaluate",
    "fit",
    "mean_trajectory",
    "persistence",
    "results_table",
]
