"""The baselines stage: TracIn-CP, Grad-Dot, persistence and mean trajectory, scored on the
held-out test runs by the same harness as the simulators (``simulator.metrics``).

Gradient methods predict changes in *loss*; for any other metric (BLEU, ROUGE-L) they are
recorded as not applicable. Persistence and mean trajectory are reported for every metric.
Nothing is fitted: the TracIn trajectories are not rescaled to any true trajectory.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

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
SANITY_METHODS = ("persistence", "mean_trajectory")
NOT_APPLICABLE = "not applicable"
NA_REASON = "gradient influence predicts changes in loss only"


def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # Comma-separated subset of: persistence, mean_trajectory, and the gradient methods
    # tracin_cp_all (every saved step), tracin_cp_k (num_checkpoints evenly spaced saved
    # steps), grad_dot (final parameters), each also with the suffix _last_layer.
    c.methods = ",".join(SANITY_METHODS + tuple(GRADIENT_METHODS))
    c.num_checkpoints = 10  # k of tracin_cp_k (the paper's "10 steps")
    c.loss_metric = "loss"  # the metric the gradient methods apply to
    c.start = 1  # steps 0..start-1 are given to every method
    c.factorize = "vocab"  # none | vocab | all (see baselines.grads.GradConfig)
    c.projection_dim = 0  # 0: exact gradient inner products
    c.projection_block = 0
    c.seed = 0  # of the random projection
    c.memory_budget_mb = 2048.0
    c.chunk_size = 0  # examples per vmapped chunk (0: from the memory budget)
    c.save_predictions = True
    return c


def _methods(cfg: ml_collections.ConfigDict) -> list[str]:
    names = [m.strip() for m in str(cfg.methods).split(",") if m.strip()]
    known = SANITY_METHODS + tuple(GRADIENT_METHODS)
    unknown = [m for m in names if m not in known]
    if unknown:
        raise ValueError(f"baselines.methods: unknown {unknown}; known: {list(known)}")
    return names


def _runs(split: dict, name: str, valid: np.ndarray) -> list[int]:
    runs = [int(r) for r in split.get(name, [])]
    return [r for r in runs if bool(valid[r])]


def _not_applicable() -> dict[str, Any]:
    """A results row for a method that does not apply to a metric: NaN numbers (so tables
    built from it still render) flagged ``not_applicable``."""
    from simulator.metrics import KEYS

    return {k: math.nan for k in KEYS} | {"not_applicable": True, "reason": NA_REASON}


def _fmt(x: Any) -> str:
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def markdown_table(results: dict[str, dict[str, dict]]) -> str:
    lines = []
    for metric, rows in results.items():
        lines += [
            f"### {metric} (held-out test runs)",
            "",
            "| method | all-steps MSE | all-steps MAE | final-step ρ | across-run ρ | seconds |",
            "|---|---|---|---|---|---|",
        ]
        for method, m in rows.items():
            if m.get("not_applicable"):
                lines.append(f"| {method} | {NOT_APPLICABLE} | | | | |")
                continue
            lines.append(
                f"| {method} | {_fmt(m['mse_mean'])} ({_fmt(m['mse_std'])}) "
                f"| {_fmt(m['mae_mean'])} ({_fmt(m['mae_std'])}) "
                f"| {_fmt(m['final_spearman_mean'])} ({_fmt(m['final_spearman_std'])}) "
                f"| {_fmt(m['across_run_spearman'])} | {_fmt(m.get('seconds', ''))} |"
            )
        lines.append("")
    return "\n".join(lines)


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def run_baselines(
    dyn: dict,
    split: dict,
    cfg: ml_collections.ConfigDict,
    workdir: str | os.PathLike,
    *,
    graphdef: Any,
    params_at: Callable[[int, int], Any],
    saved_steps: Callable[[int], Sequence[int]],
    train_tokens: Any,
    test_tokens: Any,
) -> dict[str, dict]:
    """Score the baselines on the test runs of ``split``; returns {metric: {method: row}}.

    dyn: ``curricula`` [K, T, B], ``metrics`` {name: [K, T+1, N]}, ``lr`` [K, T], ``valid``
    [K]. split: run indices ``train`` (for the mean trajectory), ``val``, ``test`` (scored);
    invalid runs are left out. params_at(run, step) / saved_steps(run): the run's saved
    parameters. train_tokens: the pool's token batch (row = pool id); test_tokens: the test
    examples' (row = test example). Writes ``results/baselines.{md,json}`` (and the simulated
    trajectories, ``results/baselines_predictions.npz``) under workdir.
    """
    from simulator.metrics import evaluate, mean_trajectory, persistence

    if "baselines" in cfg and isinstance(cfg.get("baselines"), ml_collections.ConfigDict):
        cfg = cfg.baselines
    defaults = default_config()
    defaults.update(dict(cfg))
    cfg = defaults
    methods = _methods(cfg)
    start = int(cfg.start)
    curricula = np.asarray(dyn["curricula"])
    lr = np.asarray(dyn["lr"], np.float64)
    valid = np.asarray(dyn["valid"], bool)
    metrics = {name: np.asarray(y) for name, y in dyn["metrics"].items()}
    train_runs, test_runs = _runs(split, "train", valid), _runs(split, "test", valid)
    if not test_runs:
        raise ValueError("baselines: no valid test runs in the split")
    grad_methods = [m for m in methods if m in GRADIENT_METHODS]
    if grad_methods and cfg.loss_metric not in metrics:
        raise ValueError(
            f"baselines: loss metric {cfg.loss_metric!r} not among the recorded metrics "
            f"{sorted(metrics)}"
        )
    train_tokens, test_tokens = as_batch(train_tokens), as_batch(test_tokens)

    results: dict[str, dict] = {}
    predictions: dict[str, np.ndarray] = {}
    for name, y in metrics.items():
        true = y[test_runs]
        rows: dict[str, Any] = {}
        for method in methods:
            t0 = time.perf_counter()
            if method == "persistence":
                pred = persistence(true, start)
            elif method == "mean_trajectory":
                if not train_runs:
                    raise ValueError("baselines: mean_trajectory needs valid training runs")
                pred = mean_trajectory(y[train_runs], true, start)
            elif name != cfg.loss_metric:
                rows[method] = _not_applicable()
                continue
            else:
                continue  # gradient methods below, sharing gradients between schedules
            rows[method] = evaluate(pred, true, start) | {"seconds": time.perf_counter() - t0}
            predictions[f"{name}__{method}"] = pred
        results[name] = rows

    if grad_methods:
        name = cfg.loss_metric
        y = metrics[name]
        true = y[test_runs]
        engines: dict[str, GradientEngine] = {}
        scorers: dict[str, dict[int, ScoresAt]] = {}
        like = params_at(test_runs[0], int(min(saved_steps(test_runs[0]))))
        for method in grad_methods:
            mode, layers = GRADIENT_METHODS[method]
            if layers not in engines:
                engines[layers] = GradientEngine(
                    graphdef,
                    like,
                    GradConfig(
                        layers=layers,
                        factorize=str(cfg.factorize),
                        projection_dim=int(cfg.projection_dim),
                        projection_block=int(cfg.projection_block),
                        seed=int(cfg.seed),
                        memory_budget_mb=float(cfg.memory_budget_mb),
                        chunk_size=int(cfg.chunk_size),
                    ),
                )
                scorers[layers] = {}
            t0 = time.perf_counter()
            pred = simulate_runs(
                engines[layers],
                test_runs,
                params_at=params_at,
                saved_steps=saved_steps,
                curricula=curricula,
                lr=lr,
                y=y,
                train_tokens=train_tokens,
                test_tokens=test_tokens,
                mode=mode,
                k=int(cfg.num_checkpoints),
                start=start,
                scorers=scorers[layers],
            )
            seconds = time.perf_counter() - t0
            results[name][method] = evaluate(pred, true, start) | {"seconds": seconds}
            predictions[f"{name}__{method}"] = pred
        # Keep the configured order of methods in the table.
        results[name] = {m: results[name][m] for m in methods if m in results[name]}

    out = Path(workdir) / "results"
    header = (
        f"## Baselines on {len(test_runs)} held-out test runs "
        f"(steps {start}..T scored; gradient methods: factorize={cfg.factorize}, "
        f"projection_dim={cfg.projection_dim}, k={cfg.num_checkpoints})\n\n"
    )
    _atomic_write(out / "baselines.md", (header + markdown_table(results)).encode())
    payload = {
        "test_runs": test_runs,
        "train_runs": train_runs,
        "config": cfg.to_dict(),
        "results": {
            metric: {
                m: (NOT_APPLICABLE if row.get("not_applicable") else row) for m, row in rows.items()
            }
            for metric, rows in results.items()
        },
    }
    _atomic_write(out / "baselines.json", json.dumps(_json_safe(payload), indent=2).encode())
    if cfg.save_predictions:
        tmp = out / "baselines_predictions.tmp.npz"
        np.savez_compressed(tmp, test_runs=np.asarray(test_runs), **predictions)
        os.replace(tmp, out / "baselines_predictions.npz")
    return results
