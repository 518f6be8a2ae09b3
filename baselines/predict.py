"""Simulated loss trajectories of the gradient-based baselines (TracIn-CP, Grad-Dot) on given
runs. Nothing is fitted: the trajectories are not rescaled to any true trajectory. Scoring
and writing results is the caller's (the pipeline scores them with ``gptjax.evaluation``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from baselines.grads import GradConfig, GradientEngine, as_batch
from baselines.tracin import ScoresAt, simulate_runs

# method -> (checkpoint schedule, gradient layers)
GRADIENT_METHODS = {
    "tracin_cp_all": ("all", "all"),
    "tracin_cp_k": ("k", "all"),
    "grad_dot": ("final", "all"),
    "tracin_cp_all_last_layer": ("all", "last"),
    "tracin_cp_k_last_layer": ("k", "last"),
    "grad_dot_last_layer": ("final", "last"),
}


def predict_gradient_methods(
    methods: Sequence[str],
    runs: Sequence[int],
    *,
    curricula: np.ndarray,
    lr: np.ndarray,
    y: np.ndarray,
    graphdef: Any,
    params_at: Callable[[int, int], Any],
    saved_steps: Callable[[int], Sequence[int]],
    train_tokens: Any,
    test_tokens: Any,
    grad_config: GradConfig,
    num_checkpoints: int = 10,
    start: int = 1,
    progress: bool = False,
    first_layer: int = 0,
) -> dict[str, tuple[np.ndarray, float]]:
    """{method: (predicted loss [R, T+1, N], seconds)} for ``runs``.

    curricula [K, T, B], lr [K, T], y [K, T+1, N] (the true losses; steps < start are
    given). params_at(run, step) / saved_steps(run): the run's saved parameters.
    train_tokens: the pool's token batch (row = pool id); test_tokens: the test examples'.
    ``grad_config.layers`` is set per method; gradients are shared between methods with the
    same layers. ``first_layer``: a partially fine-tuned model's first trained block (see
    `GradientEngine`); 0 when every parameter was trained.
    """
    unknown = [m for m in methods if m not in GRADIENT_METHODS]
    if unknown:
        raise ValueError(f"unknown gradient methods {unknown}; known: {list(GRADIENT_METHODS)}")
    train_tokens, test_tokens = as_batch(train_tokens), as_batch(test_tokens)
    runs = [int(r) for r in runs]
    like = params_at(runs[0], int(min(saved_steps(runs[0]))))
    engines: dict[str, GradientEngine] = {}
    scorers: dict[str, dict[int, ScoresAt]] = {}
    out: dict[str, tuple[np.ndarray, float]] = {}
    bar = tqdm(total=len(methods) * len(runs), desc="baselines", unit="run", disable=not progress)
    for method in methods:
        mode, layers = GRADIENT_METHODS[method]
        if layers not in engines:
            engines[layers] = GradientEngine(
                graphdef,
                like,
                dataclasses.replace(grad_config, layers=layers),
                first_layer=first_layer,
            )
            scorers[layers] = {}
            # The frozen blocks' output (a partially fine-tuned model), once for every run.
            train_tokens = engines[layers].attach_residuals(like, train_tokens)
            test_tokens = engines[layers].attach_residuals(like, test_tokens)
        bar.set_postfix(method=method)
        t0 = time.perf_counter()
        preds = []
        for run in runs:  # one at a time for the progress bar; gradients shared via scorers
            preds.append(
                simulate_runs(
                    engines[layers],
                    [run],
                    params_at=params_at,
                    saved_steps=saved_steps,
                    curricula=np.asarray(curricula),
                    lr=np.asarray(lr, np.float64),
                    y=np.asarray(y),
                    train_tokens=train_tokens,
                    test_tokens=test_tokens,
                    mode=mode,
                    k=int(num_checkpoints),
                    start=start,
                    scorers=scorers[layers],
                )[0]
            )
            bar.update(1)
        out[method] = (np.stack(preds), time.perf_counter() - t0)
    bar.close()
    return out
