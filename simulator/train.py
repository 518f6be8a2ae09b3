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
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx

from . import rollout as rl
from .gptfluence import INITS, GPTfluenceConcat, GPTfluenceDot
from .simfluence import SimfluenceLinear

log = logging.getLogger(__name__)
KINDS = ("gptfluence", "simfluence")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class FitConfig:
    """Hyper-parameters of one simulator. ``hidden``/``out_dim`` default by variant:
    dot 384/384 (F_j: d→384→ReLU→384), concat 768/100 (2d→768→ReLU→100→ReLU→heads)."""

    variant: str = "dot"
    order: int = 1
    hidden: int | None = None
    out_dim: int | None = None
    init: str = "torch"
    batch_reduce: str = "sum"
    pad: str = "first"
    lr: float = 1e-4
    weight_decay: float = 1e-3
    batch_size: int = 128
    warmup_steps: int = 200
    epochs: int = 20
    min_steps: int = 2000  # small data: more epochs until this many optimiser updates
    patience: int = 5
    rollout_k: int = 1
    observe_every: int = 1
    grad_clip: float = 1.0
    max_windows_per_epoch: int = 0  # 0 = every window each epoch
    factor_mode: str = "auto"  # dot variant: "pool" | "gather" | "auto"
    lr_scale: bool = False  # scale each step's change by its learning rate (needs lr [K, T])
    anchor: str = "none"  # "mean": simulate the deviation from the mean training trajectory
    seed: int = 0

    def resolved(self) -> FitConfig:
        hid = self.hidden or (768 if self.variant == "concat" else 384)
        out = self.out_dim or (100 if self.variant == "concat" else 384)
        return dataclasses.replace(self, hidden=hid, out_dim=out)


def as_fit_config(config: Any) -> FitConfig:
    """FitConfig from a FitConfig, a mapping or an ``ml_collections.ConfigDict`` (unknown keys
    are ignored, so one config section can hold settings for several model kinds)."""
    if isinstance(config, FitConfig):
        return config.resolved()
    if config is None:
        return FitConfig().resolved()
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    names = {f.name for f in dataclasses.fields(FitConfig)}
    return FitConfig(**{k: v for k, v in dict(config).items() if k in names}).resolved()


def build_model(
    kind: str, cfg: FitConfig, dim: int, n_pool: int, n_test: int, batch_size: int
) -> nnx.Module:
    rngs = nnx.Rngs(cfg.seed)
    if (
        cfg.init not in INITS
        or cfg.batch_reduce not in rl.REDUCE_MODES
        or cfg.pad not in rl.PAD_MODES
    ):
        raise ValueError(f"bad init/batch_reduce/pad in {cfg}")
    if kind == "gptfluence":
        if not 1 <= cfg.order <= 10:
            raise ValueError(f"order must be in 1..10, got {cfg.order}")
        if cfg.variant == "dot":
            return GPTfluenceDot(cfg.order, dim, cfg.hidden, cfg.out_dim, init=cfg.init, rngs=rngs)
        if cfg.variant == "concat":
            return GPTfluenceConcat(
                cfg.order, dim, cfg.hidden, cfg.out_dim, init=cfg.init, rngs=rngs
            )
        raise ValueError(f"variant must be 'dot' or 'concat', got {cfg.variant!r}")
    if kind == "simfluence":
        return SimfluenceLinear(
            n_pool, n_test, batch_size=batch_size, batch_reduce=cfg.batch_reduce
        )
    raise ValueError(f"model_kind must be one of {KINDS}, got {kind!r}")


def _table(model, train_feats, test_feats, train_ids, test_ids):
    if isinstance(model, SimfluenceLinear):
        return model.table_by_ids(train_ids, test_ids)
    return model.table(train_feats[train_ids], test_feats[test_ids])


@partial(jax.jit, static_argnames=("graphdef", "order", "batch_reduce", "pad"))
def _rollout_params(
    graphdef,
    params,
    train_feats,
    test_feats,
    train_ids,
    test_ids,
    curricula,
    y_given,
    scale,
    *,
    order,
    batch_reduce,
    pad,
):
    """Table from the parameters (once), then the scanned rollout. One compiled function."""
    table = _table(nnx.merge(graphdef, params), train_feats, test_feats, train_ids, test_ids)
    return rl.rollout_table(
        table, curricula, y_given, order=order, batch_reduce=batch_reduce, pad=pad, scale=scale
    )


@partial(jax.jit, static_argnames=("graphdef",))
def _table_params(graphdef, params, train_feats, test_feats, train_ids, test_ids):
    return _table(nnx.merge(graphdef, params), train_feats, test_feats, train_ids, test_ids)


@dataclass
class FittedSimulator:
    """A fitted GPTfluence or Simfluence with its features; rolls out any curriculum."""

    kind: str
    config: FitConfig
    graphdef: Any
    params: Any
    train_features: np.ndarray | None
    test_features: np.ndarray | None
    n_pool: int
    n_test: int
    batch_size: int
    history: list[dict] = field(default_factory=list)
    lr_ref: float | None = None  # learning-rate conditioning: the reference rate
    mean_lr: list[float] | None = None  # and the training runs' mean schedule (the default)
    anchor_traj: np.ndarray | None = None  # [T+1, N] with anchor="mean"

    @property
    def order(self) -> int:
        return self.config.order if self.kind == "gptfluence" else 1

    @property
    def model(self) -> nnx.Module:
        return nnx.merge(self.graphdef, self.params)

    def _inputs(self, train_ids, test_ids, train_features, test_features):
        if self.kind == "simfluence" and (train_features is not None or test_features is not None):
            raise ValueError("Simfluence has no features: it cannot score new examples")
        tr = self.train_features if train_features is None else train_features
        te = self.test_features if test_features is None else test_features
        n_test = self.n_test if te is None else len(te)
        test_ids = np.arange(n_test) if test_ids is None else np.asarray(test_ids)
        tr = jnp.zeros((1, 1)) if tr is None else jnp.asarray(tr, jnp.float32)
        te = jnp.zeros((1, 1)) if te is None else jnp.asarray(te, jnp.float32)
        return tr, te, jnp.asarray(train_ids, jnp.int32), jnp.asarray(test_ids, jnp.int32)

    def coef_table(
        self, test_ids=None, train_ids=None, *, train_features=None, test_features=None
    ) -> np.ndarray:
        """[order+1, P, N] per-example coefficients (α_1..α_n, β), over ``train_ids`` (default
        every pool example) and ``test_ids`` (default every test example)."""
        if train_ids is None:
            n = self.n_pool if train_features is None else len(train_features)
            train_ids = np.arange(n)
        args = self._inputs(train_ids, test_ids, train_features, test_features)
        return np.asarray(_table_params(self.graphdef, self.params, *args))

    def step_scale(self, lr: np.ndarray | None, runs: int, steps: int) -> np.ndarray:
        """[R, T] per-step change scale: lr / lr_ref with learning-rate conditioning (the
        training runs' mean schedule when ``lr`` is None), ones otherwise."""
        if not self.config.lr_scale:
            return np.ones((runs, steps), np.float32)
        if lr is None:
            if self.mean_lr is None or len(self.mean_lr) != steps:
                raise ValueError(
                    f"this simulator conditions on the learning rate: pass lr "
                    f"[R, {steps}] (it was trained on {len(self.mean_lr or [])} "
                    f"steps)"
                )
            lr = np.asarray(self.mean_lr)
        lr = np.broadcast_to(np.asarray(lr, np.float64), (runs, steps))
        return (lr / self.lr_ref).astype(np.float32)

    def rollout(
        self,
        curricula: np.ndarray,
        y_init: np.ndarray,
        test_ids=None,
        *,
        lr: np.ndarray | None = None,
        train_features=None,
        test_features=None,
    ) -> np.ndarray:
        """Simulate runs with any curriculum (int [R, T, B], -1 = empty slot) from
        ``y_init`` ([R, N]: y_0, or [R, m, N]: the first m values) → [R, T+1, N].

        ``test_ids`` selects test examples (columns of ``y_init``); new examples can be
        scored by passing their ``test_features`` (and new pools by ``train_features``).
        ``lr`` ([R, T] or [T]) is the learning-rate schedule, used by simulators fitted with
        ``lr_scale`` (default: the training runs' mean schedule).
        """
        used, compact = rl.compact_ids(curricula)
        args = self._inputs(used, test_ids, train_features, test_features)
        y_given = rl.as_given(y_init)
        if y_given.shape[2] != args[3].shape[0]:
            raise ValueError(
                f"y_init has {y_given.shape[2]} test examples, test_ids {args[3].shape[0]}"
            )
        scale = jnp.asarray(self.step_scale(lr, *compact.shape[:2]))
        anchor = self._anchor(args[3], compact.shape[1], test_features)
        out = _rollout_params(
            self.graphdef,
            self.params,
            *args,
            jnp.asarray(compact),
            y_given - anchor[: y_given.shape[1]],
            scale,
            order=self.order,
            batch_reduce=self.config.batch_reduce,
            pad=self.config.pad,
        )
        return np.asarray(out + anchor)

    def _anchor(self, test_ids, steps: int, test_features=None) -> jax.Array:
        """[T+1, N] trajectory the model's deviations are added to (zeros without one)."""
        if self.anchor_traj is None:
            return jnp.zeros((steps + 1, len(test_ids)), jnp.float32)
        if test_features is not None or steps + 1 != self.anchor_traj.shape[0]:
            raise ValueError(
                "a simulator anchored on the mean training trajectory rolls out "
                f"its own test examples over {self.anchor_traj.shape[0] - 1} "
                "steps only"
            )
        return jnp.asarray(self.anchor_traj[:, np.asarray(test_ids)], jnp.float32)

    def evaluate(
        self, curricula: np.ndarray, y: np.ndarray, start: int = 1, lr: np.ndarray | None = None
    ) -> dict:
        from .metrics import evaluate

        return evaluate(self.rollout(curricula, y[:, :start], lr=lr), y, start=start)

    # ---- persistence -------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Orbax checkpoint of parameters and features + ``meta.json`` (written last, so
        its presence means a complete checkpoint)."""
        path = Path(path).absolute()
        path.mkdir(parents=True, exist_ok=True)
        tree = {"params": nnx.to_pure_dict(self.params)}
        if self.train_features is not None:
            tree["train_features"] = np.asarray(self.train_features)
            tree["test_features"] = np.asarray(self.test_features)
        if self.anchor_traj is not None:
            tree["anchor"] = np.asarray(self.anchor_traj, np.float32)
        with ocp.StandardCheckpointer() as ckpt:
            ckpt.save(path / "state", tree, force=True)
        meta = {
            "format": FORMAT_VERSION,
            "kind": self.kind,
            "config": dataclasses.asdict(self.config),
            "n_pool": self.n_pool,
            "n_test": self.n_test,
            "batch_size": self.batch_size,
            "history": self.history,
            "lr_ref": self.lr_ref,
            "mean_lr": self.mean_lr,
        }
        tmp = path / "meta.json.tmp"
        tmp.write_text(json.dumps(meta, indent=1))
        os.replace(tmp, path / "meta.json")

    @staticmethod
    def exists(path: str | os.PathLike) -> bool:
        return (Path(path) / "meta.json").is_file()

    @classmethod
    def restore(cls, path: str | os.PathLike) -> FittedSimulator:
        path = Path(path).absolute()
        meta = json.loads((path / "meta.json").read_text())
        cfg = FitConfig(**meta["config"])
        with ocp.StandardCheckpointer() as ckpt:
            tree = ckpt.restore(path / "state")
        tr = tree.get("train_features")
        dim = 1 if tr is None else tr.shape[1]
        model = build_model(
            meta["kind"], cfg, dim, meta["n_pool"], meta["n_test"], meta["batch_size"]
        )
        graphdef, params = nnx.split(model, nnx.Param)
        nnx.replace_by_pure_dict(params, jax.tree.map(jnp.asarray, tree["params"]))
        te = tree.get("test_features")
        return cls(
            meta["kind"],
            cfg,
            graphdef,
            params,
            None if tr is None else np.asarray(tr),
            None if te is None else np.asarray(te),
            meta["n_pool"],
            meta["n_test"],
            meta["batch_size"],
            meta.get("history", []),
            meta.get("lr_ref"),
            meta.get("mean_lr"),
            None if "anchor" not in tree else np.asarray(tree["anchor"]),
        )


# ---- training ------------------------------------------------------------------------------
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
    workdir: str | os.PathLike | None = None,
    verbose: bool = False,
) -> FittedSimulator:
    """Fit ``model_kind`` ("gptfluence" | "simfluence") on ``train_runs``, early-stopped on the
    autoregressive all-steps MSE of ``val_runs`` (falls back to the training runs if empty).

    curricula int32 [K, T, B]; y float32 [K, T+1, N]; train_features [P, d]; test_features
    [N, d] (features are ignored by Simfluence, may be None). Runs marked invalid in ``valid``
    or with non-finite values are skipped. ``lr`` [K, T], the runs' learning rates, is needed
    with ``lr_scale`` (each step's change scaled by lr / max training lr). With ``workdir``
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
    if len(val_runs) == 0:
        log.warning("no validation runs: early stopping on the training runs' rollout")
        val_runs = train_runs
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
    model = build_model(model_kind, cfg, dim, n_pool, n_test, bsz)
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
        pred = _rollout_params(
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
            if bad >= cfg.patience:
                break
    history.append({"best_epoch": best_epoch, "best_val_mse": best_val})
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
    )
    if workdir is not None:
        fitted.save(workdir)
    return fitted
