"""Fitting a simulator to observed training dynamics, and the fitted object.

``fit`` learns from windows of K steps of the training runs: from the true history at step
t0-1 (teacher forcing) the model unrolls K steps through the curriculum and is scored
against the true values (MSE). K = 1 is the paper's one-step teacher forcing; K > 1 is the
multi-step rollout loss (the reference trains one step ahead but is judged on long
rollouts). With ``observe_every = m`` only steps 0, m, 2m, …, T are observed (the paper's
checkpoint-interval ablation): windows start at observed steps, unroll m steps, and are
scored where observed; history values at unobserved steps are linearly interpolated.
Non-finite values in ``y`` at steps where most runs have none are treated the same way
(generation metrics such as BLEU are measured only every few steps, NaN elsewhere).

AdamW with linear warm-up then linear decay over max(epochs, enough epochs for
``min_steps`` updates); after every epoch the validation runs are
rolled out autoregressively from y_0 and the parameters with the lowest all-steps MSE are
kept (early stopping with ``patience`` epochs), then checkpointed with Orbax.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import time
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from gptjax.io import atomic_write_json, fingerprint, read_json, tree_digest

from . import rollout as rl
from .fitted import FitConfig, FittedSimulator, as_fit_config, make_simulator, rollout_params
from .simfluence import SimfluenceLinear

log = logging.getLogger(__name__)


def observed_steps(y: np.ndarray, runs: np.ndarray, every: int = 1) -> np.ndarray:
    """bool [T+1]: steps with a value (finite in most of ``runs``; generation metrics are
    only measured every few steps, NaN elsewhere) that also fall on the ``every`` grid
    (0, m, 2m, …, and always T)."""
    finite = np.isfinite(y[runs]).all(axis=2).mean(axis=0) >= 0.5
    steps = np.arange(y.shape[1])
    grid = (steps % max(every, 1) == 0) | (steps == y.shape[1] - 1)
    obs = finite & grid
    if not obs[0]:
        raise ValueError("step 0 (before training) must be observed")
    return obs


def interpolation_matrix(observed: np.ndarray) -> np.ndarray:
    """[T+1, T+1] W with (W @ y) = y linearly interpolated from the observed steps
    (held constant after the last one)."""
    steps = np.arange(len(observed))
    idx = np.nonzero(observed)[0]
    w = np.zeros((len(steps), len(steps)))
    for t in steps:
        if observed[t] or t > idx[-1]:
            w[t, idx[idx <= t][-1]] = 1.0
            continue
        hi = idx[np.searchsorted(idx, t)]
        lo = idx[idx < t][-1]
        w[t, lo], w[t, hi] = (hi - t) / (hi - lo), (t - lo) / (hi - lo)
    return w


def kernel_unit(
    y: np.ndarray,
    curricula: np.ndarray,
    scale: np.ndarray,
    train_phi: np.ndarray,
    test_phi: np.ndarray,
    runs: np.ndarray,
    observed: np.ndarray,
) -> float:
    """The least-squares scale u of the gradient kernel (``kernel_dim`` > 0): over the
    ``runs`` and observed steps t, y_t regressed on the kernel summed over the curriculum so
    far, u·Σ_{s≤t} scale_s · mean_{i∈c_s} ⟨φ_i, φ'⟩, both centred over the runs per step and
    test example (what every run shares is the mean trajectory's part). Levels, not step
    changes: a batch keeps acting on later steps (optimiser momentum), so its whole effect is
    about twice its first step's (SST-2 probe); the rollout is scored on levels too.
    1.0 when the kernel carries nothing (all zero)."""
    runs = np.asarray(runs)
    kern = np.asarray(train_phi, np.float64) @ np.asarray(test_phi, np.float64).T  # [P, N]
    cur = np.asarray(curricula[runs])
    rows = np.where(cur >= 0, cur, 0)
    present = (cur >= 0)[..., None]
    per_step = (kern[rows] * present).sum(2) / np.maximum(present.sum(2), 1)  # [R, T, N]
    per_step = per_step * np.asarray(scale[runs], np.float64)[..., None]
    cum = np.concatenate([np.zeros_like(per_step[:, :1]), np.cumsum(per_step, 1)], 1)
    obs = np.nonzero(observed)[0]
    dy = np.asarray(y[runs], np.float64)[:, obs]
    dk = cum[:, obs]
    ok = np.isfinite(dy)
    dy, dk = np.where(ok, dy, 0.0), np.where(ok, dk, 0.0)
    count = np.maximum(ok.sum(0), 1)
    dy = np.where(ok, dy - dy.sum(0) / count, 0.0)
    dk = np.where(ok, dk - dk.sum(0) / count, 0.0)
    den = float((dk**2).sum())
    unit = float((dk * dy).sum()) / den if den > 0 else 1.0
    return unit if math.isfinite(unit) and unit != 0.0 else 1.0


def _prepare(
    y: np.ndarray,
    curricula: np.ndarray,
    scale: np.ndarray,
    runs: np.ndarray,
    k: int,
    observed: np.ndarray,
):
    """Padded device arrays for window sampling: y (0 where unobserved), history
    (interpolated where unobserved), curricula, observation mask, step scale; and the window
    starts."""
    yr = np.where(observed[None, :, None], np.asarray(y[runs], np.float64), 0.0)
    cr = np.asarray(curricula[runs], np.int32)
    y_hist = np.einsum("ts,ksn->ktn", interpolation_matrix(observed), yr)
    pad = k - 1
    y_pad = np.pad(yr, ((0, 0), (0, pad), (0, 0)))
    c_pad = np.pad(cr, ((0, 0), (0, pad), (0, 0)), constant_values=-1)
    obs_pad = np.pad(observed, (0, pad)).astype(np.float32)
    s_pad = np.pad(scale[runs], ((0, 0), (0, pad)), constant_values=1.0)
    starts = np.nonzero(observed[:-1])[0] + 1  # t0 such that t0 - 1 is observed
    return (
        jnp.asarray(y_pad, jnp.float32),
        jnp.asarray(y_hist, jnp.float32),
        jnp.asarray(c_pad),
        jnp.asarray(obs_pad),
        jnp.asarray(s_pad, jnp.float32),
    ), starts


def _window_loss(model, data, feats, idx, *, k, order, batch_reduce, pad, mode):
    """Mean squared error of K-step unrolls from the true history; idx [M, 3] = (run, t0, n)."""
    y_pad, y_hist, c_pad, obs_pad, s_pad = data
    r, t0, n = idx[:, 0], idx[:, 1], idx[:, 2]
    steps = t0[:, None] - 1 + jnp.arange(k)  # curriculum index of steps t0..t0+k-1
    ids = c_pad[r[:, None], steps]  # [M, k, B]
    if isinstance(model, SimfluenceLinear):
        coefs = model.transition_coefs(ids, n, batch_reduce)
    else:
        coefs = model.transition_coefs(feats[0], feats[1], ids, n, batch_reduce, mode)
    coefs = rl.scale_step(coefs, s_pad[r[:, None], steps], order)
    back = t0[:, None] - 1 - jnp.arange(order)  # history steps, newest first
    hist = y_hist[r[:, None], jnp.maximum(back, 0), n[:, None]]
    if pad == "zero":
        hist = jnp.where(back >= 0, hist, 0.0)

    def step(h, c):
        y = rl.advance(h, c, order)
        return rl.push(h, y), y

    _, pred = jax.lax.scan(step, hist, jnp.swapaxes(coefs, 0, 1))  # [k, M]
    tsteps = t0[:, None] + jnp.arange(k)
    target = y_pad[r[:, None], tsteps, n[:, None]]
    mask = obs_pad[tsteps]
    return jnp.sum(mask * (pred.T - target) ** 2) / jnp.maximum(jnp.sum(mask), 1.0)


def _make_epoch(graphdef, tx, **static):
    def train_step(carry, idx, data, feats):
        params, opt_state = carry

        def loss_fn(p):
            return _window_loss(nnx.merge(graphdef, p), data, feats, idx, **static)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    @partial(jax.jit, donate_argnums=(0, 1))
    def epoch(params, opt_state, data, feats, batches):
        (params, opt_state), losses = jax.lax.scan(
            lambda c, i: train_step(c, i, data, feats), (params, opt_state), batches
        )
        return params, opt_state, jnp.mean(losses)

    return epoch


def _host_copy(tree):
    # A real copy: on CPU np.asarray may alias a buffer that the next epoch donates.
    return jax.tree.map(lambda x: np.array(x, copy=True), tree)


def _valid_runs(runs, y, valid) -> np.ndarray:
    """Runs not marked invalid whose values are finite wherever most runs have values."""
    runs = np.asarray(list(runs), np.int64)
    if valid is not None:
        runs = runs[np.asarray(valid, bool)[runs]]
    if len(runs) == 0:
        return runs
    steps = np.isfinite(y[runs]).all(axis=2).mean(axis=0) >= 0.5
    ok = np.isfinite(y[runs][:, steps]).reshape(len(runs), -1).all(1)
    return runs[ok]


def fit(
    model_kind: str,
    curricula: np.ndarray,
    y: np.ndarray,
    train_features: np.ndarray | None,
    test_features: np.ndarray | None,
    train_runs,
    val_runs,
    config: Any = None,
    *,
    valid: np.ndarray | None = None,
    lr: np.ndarray | None = None,
    save_dir: str | Path | None = None,
    verbose: bool = False,
    progress: bool = False,
) -> FittedSimulator:
    """Fit ``model_kind`` ("gptfluence" | "simfluence") on ``train_runs``, early-stopped on the
    autoregressive all-steps MSE of ``val_runs`` (falls back to the training runs if empty).

    curricula int32 [K, T, B]; y float32 [K, T+1, N]; train_features [P, d]; test_features
    [N, d] (features are ignored by Simfluence, may be None). Runs marked invalid in ``valid``
    or with non-finite values are skipped. ``lr`` [K, T], the runs' learning rates, is needed
    with ``lr_scale`` (each step's change scaled by lr / max training lr). With ``save_dir``
    the best parameters are saved there (Orbax) and can be loaded with
    ``FittedSimulator.restore``.
    """
    cfg = as_fit_config(config)
    if model_kind == "gptfluence" and (train_features is None or test_features is None):
        raise ValueError("GPTfluence needs train_features and test_features")
    curricula = np.asarray(curricula, np.int32)
    y = np.asarray(y, np.float32)
    k_runs, steps, bsz = curricula.shape
    n_test = y.shape[2]
    if y.shape[:2] != (k_runs, steps + 1):
        raise ValueError(f"y {y.shape} does not match curricula {curricula.shape}")
    n_pool = (
        int(train_features.shape[0]) if train_features is not None else int(curricula.max()) + 1
    )
    dim = int(train_features.shape[1]) if train_features is not None else 1
    train_runs = _valid_runs(train_runs, y, valid)
    val_runs = _valid_runs(val_runs, y, valid)
    if len(train_runs) == 0:
        raise ValueError("no valid training runs")
    stopped_on = "validation"
    if len(val_runs) == 0:
        log.warning("no validation runs: early stopping on the training runs' rollout")
        val_runs, stopped_on = train_runs, "training"
    order = cfg.order if model_kind == "gptfluence" else 1
    every = max(1, cfg.observe_every)
    observed = observed_steps(y, np.concatenate([train_runs, val_runs]), every)
    # A window must reach the next observed step: K ≥ the largest gap between observations.
    gap = int(np.diff(np.nonzero(observed)[0]).max()) if observed.sum() > 1 else 1
    k = max(cfg.rollout_k, gap)

    lr_ref = mean_lr = None
    scale = np.ones((k_runs, steps), np.float32)
    if cfg.lr_scale:
        if lr is None:
            raise ValueError("lr_scale needs the runs' learning rates lr [K, T]")
        lr = np.asarray(lr, np.float64)
        lr_ref = float(lr[train_runs].max())
        mean_lr = [float(v) for v in lr[train_runs].mean(0)]
        scale = (lr / lr_ref).astype(np.float32)
    anchor_traj = None
    if cfg.anchor == "mean":
        # Mean of the training runs per step and test example (interpolated where unmeasured);
        # the model then learns only how a curriculum moves a run away from it.
        with np.errstate(invalid="ignore"):
            mean = np.nanmean(np.where(observed[None, :, None], y[train_runs], np.nan), axis=0)
        anchor_traj = (interpolation_matrix(observed) @ np.nan_to_num(mean)).astype(np.float32)
        y = y - anchor_traj[None]
    elif cfg.anchor != "none":
        raise ValueError(f"anchor must be 'none' or 'mean', got {cfg.anchor!r}")
    unit = 1.0
    if model_kind == "gptfluence" and cfg.kernel_dim:
        kd = cfg.kernel_dim
        unit = kernel_unit(
            y,
            curricula,
            scale,
            train_features[:, -kd:],
            test_features[:, -kd:],
            train_runs,
            observed,
        )
    model = make_simulator(model_kind, cfg, dim, n_pool, n_test, bsz, unit)
    graphdef, params = nnx.split(model, nnx.Param)
    data, starts = _prepare(y, curricula, scale, train_runs, k, observed)
    tr = jnp.zeros((1, 1)) if train_features is None else jnp.asarray(train_features, jnp.float32)
    te = jnp.zeros((1, 1)) if test_features is None else jnp.asarray(test_features, jnp.float32)

    n_windows = len(train_runs) * len(starts) * n_test
    per_epoch = (
        n_windows if cfg.max_windows_per_epoch <= 0 else min(n_windows, cfg.max_windows_per_epoch)
    )
    mb = min(cfg.batch_size, per_epoch)
    n_batches = per_epoch // mb
    # Few windows (small data, sparse observations) make an epoch a handful of updates:
    # train at least min_steps updates whatever the epoch count says.
    epochs = max(cfg.epochs, -(-cfg.min_steps // n_batches))
    total = max(1, n_batches * epochs)
    warm = min(cfg.warmup_steps, total // 2)
    sched = optax.join_schedules(
        [
            optax.linear_schedule(0.0, cfg.lr, max(warm, 1)),
            optax.linear_schedule(cfg.lr, 0.0, max(total - warm, 1)),
        ],
        [warm],
    )
    chain = [optax.clip_by_global_norm(cfg.grad_clip)] if cfg.grad_clip > 0 else []
    tx = optax.chain(*chain, optax.adamw(sched, weight_decay=cfg.weight_decay))
    opt_state = tx.init(params)

    mode = cfg.factor_mode
    if mode == "auto":  # evaluate the MLPs on the whole pool iff that is fewer rows
        mode = "pool" if n_pool <= mb * k * bsz else "gather"
    epoch_fn = _make_epoch(
        graphdef, tx, k=k, order=order, batch_reduce=cfg.batch_reduce, pad=cfg.pad, mode=mode
    )

    val_used, val_curr = rl.compact_ids(curricula[val_runs])
    val_y = jnp.asarray(np.where(observed[None, :, None], y[val_runs], 0.0))
    val_mask = jnp.asarray(observed[1:], jnp.float32)
    val_args = (
        tr,
        te,
        jnp.asarray(val_used),
        jnp.arange(n_test, dtype=jnp.int32),
        jnp.asarray(val_curr),
        jnp.asarray(val_y[:, :1]),
        jnp.asarray(scale[val_runs]),
    )

    def val_mse(p) -> float:
        pred = rollout_params(
            graphdef, p, *val_args, order=order, batch_reduce=cfg.batch_reduce, pad=cfg.pad
        )
        err = (pred[:, 1:] - val_y[:, 1:]) ** 2 * val_mask[None, :, None]
        v = float(jnp.sum(err) / (jnp.sum(val_mask) * err.shape[0] * err.shape[2]))
        return v if math.isfinite(v) else math.inf

    # All windows as (run slot, t0, test example); reshuffled every epoch.
    grid = (
        np.stack(
            np.meshgrid(np.arange(len(train_runs)), starts, np.arange(n_test), indexing="ij"), -1
        )
        .reshape(-1, 3)
        .astype(np.int32)
    )
    rng = np.random.default_rng(cfg.seed)
    best, best_val, best_epoch, bad = _host_copy(params), val_mse(params), 0, 0
    history = [{"epoch": 0, "train_loss": None, "val_mse": best_val}]
    bar = tqdm(total=epochs, desc=f"fit {model_kind}", unit="epoch", disable=not progress)
    for ep in range(1, epochs + 1):
        t_start = time.perf_counter()
        sel = rng.permutation(len(grid))[: n_batches * mb]
        params, opt_state, loss = epoch_fn(
            params, opt_state, data, (tr, te), jnp.asarray(grid[sel].reshape(n_batches, mb, 3))
        )
        v = val_mse(params)
        history.append(
            {
                "epoch": ep,
                "train_loss": float(loss),
                "val_mse": v,
                "seconds": time.perf_counter() - t_start,
            }
        )
        if verbose:
            print(
                f"[{model_kind}] epoch {ep}: train {float(loss):.3e} val {v:.3e} "
                f"({history[-1]['seconds']:.1f}s)",
                flush=True,
            )
        if v < best_val:
            best, best_val, best_epoch, bad = _host_copy(params), v, ep, 0
        else:
            bad += 1
        bar.update(1)
        bar.set_postfix(val_mse=f"{v:.3e}", best=f"{best_val:.3e}@{best_epoch}")
        if bad >= cfg.patience:
            break
    bar.close()
    history.append(
        {
            "best_epoch": best_epoch,
            "best_val_mse": best_val,
            "epochs_run": len(history) - 1,
            "stopped_on": stopped_on,
        }
    )
    fitted = FittedSimulator(
        model_kind,
        cfg,
        graphdef,
        jax.tree.map(jnp.asarray, best),
        None if train_features is None else np.asarray(train_features),
        None if test_features is None else np.asarray(test_features),
        n_pool,
        n_test,
        bsz,
        history,
        lr_ref,
        mean_lr,
        anchor_traj,
        unit,
    )
    if save_dir is not None:
        fitted.save(save_dir)
    return fitted


_KERNEL = {"variant": "dot", "anchor": "mean", "batch_reduce": "mean", "lr_scale": True}
# Simulator names a config may list, and what each is: (kind, overrides of its settings).
METHODS = {
    "gptfluence": ("gptfluence", {}),
    "gptfluence_dot": ("gptfluence", {"variant": "dot"}),
    "gptfluence_concat": ("gptfluence", {"variant": "concat"}),
    "gptfluence_anchored": ("gptfluence", {"anchor": "mean"}),
    # GPTfluence on the mean trajectory with the gradient kernel (gptfluence.py): its features
    # are the encoder's followed by kernel features, kernel_dim set by the caller.
    "gptfluence_kernel": ("gptfluence", _KERNEL),
    # The same recurrence with the kernel alone (no MLPs: one learned scale), the variant
    # chosen on the validation runs of benchmarks/simulator_quality (docs/simulator.md).
    "gradient_kernel": ("gptfluence", _KERNEL | {"kernel_mlp": False}),
    "simfluence": ("simfluence", {}),
}
# Simulators whose features end with gradient-kernel features (method_config's kernel_dim).
KERNEL_METHODS = ("gptfluence_kernel", "gradient_kernel")


def method_config(
    name: str, gptfluence: Any, simfluence: Any, kernel_dim: int = 0
) -> tuple[str, FitConfig]:
    """(kind, settings) of a simulator named in a config, from the two settings sections;
    ``kernel_dim``: the size of the kernel features a method of ``KERNEL_METHODS`` gets."""
    if name not in METHODS:
        raise ValueError(f"unknown simulator {name!r}; known: {', '.join(METHODS)}")
    if (name in KERNEL_METHODS) != (kernel_dim > 0):
        raise ValueError(f"simulator {name!r}: kernel_dim {kernel_dim} (> 0 iff it uses a kernel)")
    kind, overrides = METHODS[name]
    if kernel_dim:
        overrides = overrides | {"kernel_dim": kernel_dim}
    section = gptfluence if kind == "gptfluence" else simfluence
    if dataclasses.is_dataclass(section):
        section = dataclasses.asdict(section)
    elif hasattr(section, "to_dict"):
        section = section.to_dict()
    # Overrides apply before sizes are resolved: a concat variant gets the concat sizes.
    return kind, as_fit_config(dict(section) | overrides)


def fit_or_restore(
    kind: str,
    cfg: FitConfig,
    curricula: np.ndarray,
    y: np.ndarray,
    train_features: np.ndarray | None,
    test_features: np.ndarray | None,
    split: dict[str, list[int]],
    model_dir: str | Path,
    *,
    valid: np.ndarray | None = None,
    lr: np.ndarray | None = None,
    verbose: bool = False,
    progress: bool = False,
) -> FittedSimulator:
    """The simulator saved in ``model_dir`` if it was fitted with the same settings on the same
    data (recorded in ``model_dir/fit_key.json``); otherwise fit it and save it there."""
    model_dir = Path(model_dir)
    lr_used = lr if cfg.lr_scale else None
    key = {
        "kind": kind,
        "config": settings_key(cfg),
        "split": [list(map(int, split["train"])), list(map(int, split["val"]))],
        "data": fingerprint(
            curricula,
            y,
            np.zeros(0) if train_features is None else train_features,
            np.zeros(0) if test_features is None else test_features,
            np.ones(1, bool) if valid is None else valid,
            np.zeros(1) if lr_used is None else lr_used,
        ),
    }
    saved_key, damage = fit_record(model_dir)
    if saved_key == key and damage is None:
        return FittedSimulator.restore(model_dir)
    if FittedSimulator.exists(model_dir) and saved_key in (key, None):  # same fit, damaged
        print(f"simulator {model_dir}: {damage}; fitting it again")
    fitted = fit(
        kind,
        curricula,
        y,
        train_features,
        test_features,
        split["train"],
        split["val"],
        cfg,
        valid=valid,
        lr=lr_used,
        verbose=verbose,
        progress=progress,
    )
    shutil.rmtree(model_dir, ignore_errors=True)  # nothing of a damaged or older fit remains
    fitted.save(model_dir)
    digest = tree_digest(model_dir, exclude=(FIT_RECORD,))
    atomic_write_json(model_dir / FIT_RECORD, {"key": key, "digest": digest}, indent=1)
    return fitted


FIT_RECORD = "fit_key.json"
# FitConfig fields added after simulators were saved by earlier versions: left out of the fit
# key while they hold their default, so those simulators are restored, not fitted again.
_ADDED_LATER = ("kernel_dim", "kernel_mlp")


def settings_key(cfg: FitConfig) -> str:
    """``repr(cfg)`` without the `_ADDED_LATER` fields that hold their defaults: the
    settings part of a fit key, equal to what earlier versions recorded for the same fit."""
    fields = [
        (f.name, getattr(cfg, f.name))
        for f in dataclasses.fields(cfg)
        if not (f.name in _ADDED_LATER and getattr(cfg, f.name) == f.default)
    ]
    return f"{type(cfg).__name__}({', '.join(f'{k}={v!r}' for k, v in fields)})"


def fit_record(model_dir: str | Path) -> tuple[Any, str | None]:
    """(the key a saved simulator was fitted with, None if its files are as written — else
    why they cannot be trusted). A simulator without a record is incomplete or foreign."""
    model_dir = Path(model_dir)
    record = model_dir / FIT_RECORD
    if not FittedSimulator.exists(model_dir) or not record.is_file():
        return None, f"{model_dir} holds no complete fitted simulator"
    try:
        saved = read_json(record)
    except ValueError as err:
        return None, str(err)
    if saved.get("digest") != tree_digest(model_dir, exclude=(FIT_RECORD,)):
        return saved.get("key"), "its files differ from when it was fitted"
    return saved.get("key"), None


def restore_verified(model_dir: str | Path) -> FittedSimulator:
    """A saved simulator, after checking its files against its fit record (ValueError
    naming the folder when they differ)."""
    _, damage = fit_record(model_dir)
    if damage is not None:
        raise ValueError(f"simulator {model_dir}: {damage}; run the simulate stage again")
    return FittedSimulator.restore(model_dir)
