"""The pipeline's simulate stage: fit every configured simulator per metric, score it on the
held-out test runs beside the persistence and mean-trajectory baselines, write tables and
plots. Resumable: a simulator already checkpointed in the workdir for the same config and
data is restored, not refitted.

Workdir layout written here::

    simulators/<metric>/<model>/     Orbax checkpoint + meta.json + stage_key.json
    results/simulators_<metric>.md   Markdown table   (.csv, .png beside it)
    results/simulators.json          every number of every metric
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from gptjax.store import atomic_write_bytes

from . import metrics as mx
from .train import FittedSimulator, as_fit_config, fit


def default_config() -> ml_collections.ConfigDict:
    """Simulator settings (``config.simulator`` of an experiment).

    ``models``: comma-separated, each of gptfluence (variant from ``gptfluence.variant``),
    gptfluence_dot, gptfluence_concat, gptfluence_anchored (deviations from the mean
    training trajectory), simfluence. ``metrics``: comma-separated names, ""
    = every metric collected. Sizes 0 mean "the paper's for the variant" (dot 384/384,
    concat 768/100).
    """
    c = ml_collections.ConfigDict()
    c.models = "gptfluence,simfluence"
    c.metrics = ""
    c.pooling = "mean"  # encoder features: mean | cls | pooler
    c.start = 1  # simulate from y_0; steps 1..T are scored
    c.plot_examples = 4
    c.verbose = False
    g = ml_collections.ConfigDict()
    g.variant = "dot"
    g.order = 1
    g.hidden = 0
    g.out_dim = 0
    g.init = "torch"
    g.batch_reduce = "sum"
    g.pad = "first"
    g.lr = 1e-4
    g.weight_decay = 1e-3
    g.batch_size = 128
    g.warmup_steps = 200
    g.epochs = 30
    g.min_steps = 2000
    g.patience = 10
    g.rollout_k = 1
    g.observe_every = 1
    g.grad_clip = 1.0
    g.max_windows_per_epoch = 0
    g.factor_mode = "auto"
    g.lr_scale = False  # condition on each step's learning rate (uses the runs' lr)
    g.anchor = "none"  # "mean": simulate deviations from the mean training trajectory
    g.seed = 0
    c.gptfluence = g
    s = ml_collections.ConfigDict(g.to_dict())
    # Free per-pair coefficients learn from few transitions each: a larger step, no decay
    # towards the prior beyond what early stopping gives.
    s.lr = 1e-2
    s.weight_decay = 0.0
    c.simfluence = s
    return c


def _model_settings(name: str, cfg: ml_collections.ConfigDict) -> tuple[str, dict]:
    if name == "simfluence":
        return "simfluence", cfg.simfluence.to_dict()
    if name in ("gptfluence", "gptfluence_dot", "gptfluence_concat", "gptfluence_anchored"):
        settings = cfg.gptfluence.to_dict()
        if name == "gptfluence_anchored":
            settings["anchor"] = "mean"
        elif name != "gptfluence":
            settings["variant"] = name.split("_", 1)[1]
        return "gptfluence", settings
    raise ValueError(f"unknown simulator {name!r} in config 'models'")


def _fingerprint(*arrays: Any) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def _plot(
    path: Path, true: np.ndarray, preds: dict[str, np.ndarray], metric: str, n_examples: int
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_examples = max(1, min(n_examples, true.shape[2]))
    cols = min(n_examples, 4)
    rows = -(-n_examples // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    steps = np.arange(true.shape[1])
    for e in range(n_examples):
        ax = axes[e // cols][e % cols]
        seen = np.isfinite(true[0, :, e])
        ax.plot(steps[seen], true[0, seen, e], "k.-", lw=1.5, ms=3, label="true")
        for name, p in preds.items():
            ax.plot(steps, p[0, :, e], lw=1, label=name)
        ax.set_title(f"test run 0, example {e}")
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def _json_safe(x: Any) -> Any:
    """NaN / inf → null, so the file is strict JSON."""
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, float | np.floating):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def fit_or_restore(
    name: str,
    cfg: ml_collections.ConfigDict,
    dyn: dict,
    y: np.ndarray,
    split: dict,
    model_dir: Path,
) -> FittedSimulator:
    """Restore the simulator checkpointed in ``model_dir`` if it was fitted with the same
    settings on the same data; fit and checkpoint it otherwise."""
    kind, settings = _model_settings(name, cfg)
    fit_cfg = as_fit_config(settings)
    key = {
        "kind": kind,
        "config": repr(fit_cfg),
        "split": [list(map(int, split["train"])), list(map(int, split["val"]))],
        "data": _fingerprint(
            dyn["curricula"],
            y,
            dyn["train_features"],
            dyn["test_features"],
            dyn.get("valid", np.ones(1, bool)),
            dyn.get("lr") if fit_cfg.lr_scale else np.zeros(1),
        ),
    }
    key_file = model_dir / "stage_key.json"
    if FittedSimulator.exists(model_dir) and key_file.is_file():
        if json.loads(key_file.read_text()) == key:
            return FittedSimulator.restore(model_dir)
    lr = dyn.get("lr") if fit_cfg.lr_scale else None
    fitted = fit(
        kind,
        dyn["curricula"],
        y,
        dyn["train_features"],
        dyn["test_features"],
        split["train"],
        split["val"],
        fit_cfg,
        valid=dyn.get("valid"),
        lr=lr,
        verbose=bool(cfg.get("verbose", False)),
    )
    fitted.save(model_dir)
    atomic_write_bytes(key_file, json.dumps(key, indent=1).encode())
    return fitted


def run_simulators(
    dyn: dict, split: dict, cfg: ml_collections.ConfigDict | None, workdir: str | os.PathLike
) -> dict[str, dict]:
    """Fit, evaluate and report every configured simulator for every metric.

    ``dyn``: curricula [K, T, B], metrics {name: y [K, T+1, N]}, valid [K],
    train_features [P, d], test_features [N, d]. ``split``: run indices for train / val /
    test. Returns {metric: {method: metrics dict}} (methods include "persistence" and
    "mean_trajectory").
    """
    cfg = cfg if cfg is not None else default_config()
    if "simulator" in cfg and "gptfluence" not in cfg:
        cfg = cfg.simulator  # the whole experiment config was passed
    workdir = Path(workdir)
    start = int(cfg.get("start", 1))
    models = [m.strip() for m in cfg.models.split(",") if m.strip()]
    wanted = [m.strip() for m in cfg.get("metrics", "").split(",") if m.strip()]
    valid = np.asarray(dyn.get("valid", np.ones(len(dyn["curricula"]), bool)), bool)
    curricula = np.asarray(dyn["curricula"], np.int32)
    results: dict[str, dict] = {}
    for metric, y in sorted(dyn["metrics"].items()):
        if wanted and metric not in wanted:
            continue
        y = np.asarray(y, np.float32)
        runs = {k: [int(r) for r in split[k] if valid[r]] for k in ("train", "val", "test")}
        test = np.asarray(runs["test"], np.int64)
        if len(test) == 0 or len(runs["train"]) == 0:
            raise ValueError(f"{metric}: no valid training or test runs in the split")
        true = y[test]
        rows: dict[str, dict] = {}
        preds: dict[str, np.ndarray] = {}
        for name in models:
            fitted = fit_or_restore(name, cfg, dyn, y, runs, workdir / "simulators" / metric / name)
            lr = dyn.get("lr")
            preds[name] = fitted.rollout(
                curricula[test], true[:, :start], lr=None if lr is None else np.asarray(lr)[test]
            )
            rows[name] = mx.evaluate(preds[name], true, start)
        preds["persistence"] = mx.persistence(true, start)
        preds["mean_trajectory"] = mx.mean_trajectory(y[runs["train"]], true, start)
        for name in ("persistence", "mean_trajectory"):
            rows[name] = mx.evaluate(preds[name], true, start)
        out = workdir / "results"
        atomic_write_bytes(
            out / f"simulators_{metric}.md",
            (
                f"## {metric}: simulators on {len(test)} held-out test runs\n\n"
                + mx.results_table(rows)
            ).encode(),
        )
        atomic_write_bytes(out / f"simulators_{metric}.csv", mx.results_csv(rows).encode())
        _plot(
            out / f"simulators_{metric}.png", true, preds, metric, int(cfg.get("plot_examples", 4))
        )
        results[metric] = rows
    atomic_write_bytes(
        workdir / "results" / "simulators.json", json.dumps(_json_safe(results), indent=1).encode()
    )
    return results
