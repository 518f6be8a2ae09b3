"""A simulator's settings (`FitConfig`), its model, and the fitted object: rollouts over any
curriculum, coefficient tables for influence queries, Orbax save / restore."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from gptjax.io import atomic_write_json, read_json
from gptjax.models.checkpoint import this_process_only

from . import rollout as rl
from .gptfluence import INITS, GPTfluenceConcat, GPTfluenceDot
from .simfluence import SimfluenceLinear

KINDS = ("gptfluence", "simfluence")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class FitConfig:
    """Hyper-parameters of one simulator. ``hidden``/``out_dim`` default by variant:
    dot 384/384 (F_j: d→384→ReLU→384), concat 768/100 (2d→768→ReLU→100→ReLU→heads)."""

    variant: str = "dot"
    order: int = 1
    hidden: int = 0  # 0: the paper's size for the variant
    out_dim: int = 0
    init: str = "torch"
    batch_reduce: str = "sum"
    pad: str = "first"
    lr: float = 1e-4
    weight_decay: float = 1e-3
    batch_size: int = 128
    warmup_steps: int = 200
    epochs: int = 30
    min_steps: int = 2000  # small data: more epochs until this many optimiser updates
    patience: int = 10
    rollout_k: int = 1
    observe_every: int = 1
    grad_clip: float = 1.0
    max_windows_per_epoch: int = 0  # 0 = every window each epoch
    factor_mode: str = "auto"  # dot variant: "pool" | "gather" | "auto"
    lr_scale: bool = False  # scale each step's change by its learning rate (needs lr [K, T])
    anchor: str = "none"  # "mean": simulate the deviation from the mean training trajectory
    # > 0 (dot variant, mean reduction): the last kernel_dim feature columns are a gradient
    # kernel's features (see gptfluence.py), the rest feed the MLPs.
    kernel_dim: int = 0
    kernel_mlp: bool = True  # with kernel_dim > 0: False = the kernel alone (no MLPs)
    seed: int = 0

    def __post_init__(self):
        checks = [
            (self.variant in ("dot", "concat"), "variant", "dot | concat"),
            (1 <= self.order <= 10, "order", "in 1..10"),
            (self.hidden >= 0 and self.out_dim >= 0, "hidden/out_dim", ">= 0"),
            (self.init in INITS, "init", " | ".join(INITS)),
            (self.batch_reduce in rl.REDUCE_MODES, "batch_reduce", " | ".join(rl.REDUCE_MODES)),
            (self.pad in rl.PAD_MODES, "pad", " | ".join(rl.PAD_MODES)),
            (self.lr > 0, "lr", "> 0"),
            (self.weight_decay >= 0, "weight_decay", ">= 0"),
            (self.batch_size > 0, "batch_size", "> 0"),
            (self.warmup_steps >= 0, "warmup_steps", ">= 0"),
            (self.epochs > 0, "epochs", "> 0"),
            (self.min_steps >= 0, "min_steps", ">= 0"),
            (self.patience > 0, "patience", "> 0"),
            (self.rollout_k >= 1, "rollout_k", ">= 1"),
            (self.observe_every >= 1, "observe_every", ">= 1"),
            (self.grad_clip >= 0, "grad_clip", ">= 0"),
            (self.max_windows_per_epoch >= 0, "max_windows_per_epoch", ">= 0"),
            (self.factor_mode in ("auto", "pool", "gather"), "factor_mode", "auto|pool|gather"),
            (self.anchor in ("none", "mean"), "anchor", "none | mean"),
            (self.kernel_dim >= 0, "kernel_dim", ">= 0"),
            (
                self.kernel_dim == 0 or (self.variant == "dot" and self.batch_reduce == "mean"),
                "kernel_dim > 0",
                'used with variant "dot" and batch_reduce "mean"',
            ),
        ]
        bad = [f"{key} must be {want}" for ok, key, want in checks if not ok]
        if bad:
            raise ValueError("; ".join(bad))

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


def make_simulator(
    kind: str,
    cfg: FitConfig,
    dim: int,
    n_pool: int,
    n_test: int,
    batch_size: int,
    kernel_unit: float = 1.0,
) -> nnx.Module:
    """The untrained model of a simulator (settings were checked by FitConfig);
    ``kernel_unit``: the gradient kernel's fixed scale (``kernel_dim`` > 0)."""
    rngs = nnx.Rngs(cfg.seed)
    if kind == "gptfluence" and cfg.variant == "dot":
        return GPTfluenceDot(
            cfg.order,
            dim,
            cfg.hidden,
            cfg.out_dim,
            init=cfg.init,
            rngs=rngs,
            kernel_dim=cfg.kernel_dim,
            kernel_unit=kernel_unit,
            mlp=cfg.kernel_mlp or not cfg.kernel_dim,
        )
    if kind == "gptfluence":
        return GPTfluenceConcat(cfg.order, dim, cfg.hidden, cfg.out_dim, init=cfg.init, rngs=rngs)
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
def rollout_params(
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


@dataclass(frozen=True)
class RolloutCall:
    """One prepared call of a simulator's jitted rollout (see ``FittedSimulator.rollout_call``).

    ``fn(*args, **statics)`` (``call()``) runs it and returns the deviations [R, T+1, N] from
    ``anchor``; ``finish`` turns them into the rollout's result. ``fn`` is a ``jax.jit``
    function, so ``call.trace()`` gives its jaxpr and, lowered and compiled, its cost
    analysis; ``statics`` are its static keywords.
    """

    fn: Any
    args: tuple[Any, ...]
    statics: dict[str, Any]
    anchor: jax.Array  # [T+1, N]: zeros unless the simulator is anchored

    def __call__(self) -> jax.Array:
        return self.fn(*self.args, **self.statics)

    def trace(self) -> Any:
        """``jax.jit(...).trace`` of this call: ``.lower().compile().cost_analysis()``."""
        return self.fn.trace(*self.args, **self.statics)

    def finish(self, out: jax.Array) -> np.ndarray:
        """The rollout [R, T+1, N] from the output of ``call()``."""
        return np.asarray(out + self.anchor)


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
    kernel_unit: float = 1.0  # the gradient kernel's fixed scale (kernel_dim > 0)

    @property
    def order(self) -> int:
        return self.config.order if self.kind == "gptfluence" else 1

    @property
    def note(self) -> str:
        """What the results table should say about this fit ("" when nothing): a simulator
        whose best validation rollout was its untrained initial state (best epoch 0) or
        that early-stopped on its training runs for want of validation runs."""
        summary = next((h for h in reversed(self.history) if "best_epoch" in h), None)
        if summary is None:
            return ""
        notes = []
        if summary["best_epoch"] == 0:
            ran = summary.get("epochs_run")
            notes.append(
                "early-stopped at its initial state (best epoch 0"
                + (f" of {ran}" if ran is not None else "")
                + "): training never improved the validation rollout"
            )
        if summary.get("stopped_on") == "training":
            notes.append("no validation runs: early-stopped on the training runs (fallback)")
        return "; ".join(notes)

    def result_fields(self) -> dict:
        """``{"note": ...}`` to merge into its results row when there is something to say."""
        return {"note": self.note} if self.note else {}

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

    def rollout_call(
        self,
        curricula: np.ndarray,
        y_init: np.ndarray,
        test_ids=None,
        *,
        lr: np.ndarray | None = None,
        train_features=None,
        test_features=None,
    ) -> RolloutCall:
        """The compiled work of :meth:`rollout` on these arguments (same signature), unrun.

        ``rollout`` is ``call.finish(call())``, so timing ``call()`` or costing
        ``call.trace().lower().compile().cost_analysis()`` measures exactly what a rollout
        runs: the coefficient table from the parameters, the batch reduction and the scanned
        recurrence, in one jitted function. Id compaction, the anchor and the transfers are
        the cheap host-side part, done here and in ``finish``.
        """
        used, compact = rl.compact_ids(curricula)
        inputs = self._inputs(used, test_ids, train_features, test_features)
        y_given = rl.as_given(y_init)
        if y_given.shape[2] != inputs[3].shape[0]:
            raise ValueError(
                f"y_init has {y_given.shape[2]} test examples, test_ids {inputs[3].shape[0]}"
            )
        scale = jnp.asarray(self.step_scale(lr, *compact.shape[:2]))
        anchor = self._anchor(inputs[3], compact.shape[1], test_features)
        args = (
            self.graphdef,
            self.params,
            *inputs,
            jnp.asarray(compact),
            y_given - anchor[: y_given.shape[1]],
            scale,
        )
        statics = {
            "order": self.order,
            "batch_reduce": self.config.batch_reduce,
            "pad": self.config.pad,
        }
        return RolloutCall(rollout_params, args, statics, anchor)

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
        ``lr_scale`` (default: the training runs' mean schedule). :meth:`rollout_call`
        gives the compiled function this runs, for timing or costing it.
        """
        call = self.rollout_call(
            curricula,
            y_init,
            test_ids,
            lr=lr,
            train_features=train_features,
            test_features=test_features,
        )
        return call.finish(call())

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
        from gptjax.evaluation import evaluate

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
        with ocp.StandardCheckpointer(multiprocessing_options=this_process_only()) as ckpt:
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
            "kernel_unit": self.kernel_unit,
        }
        atomic_write_json(path / "meta.json", meta, indent=1)

    @staticmethod
    def exists(path: str | os.PathLike) -> bool:
        return (Path(path) / "meta.json").is_file()

    @classmethod
    def restore(cls, path: str | os.PathLike) -> FittedSimulator:
        path = Path(path).absolute()
        meta = read_json(path / "meta.json")
        cfg = FitConfig(**meta["config"])
        with ocp.StandardCheckpointer(multiprocessing_options=this_process_only()) as ckpt:
            tree = ckpt.restore(path / "state")
        tr = tree.get("train_features")
        dim = 1 if tr is None else tr.shape[1]
        unit = float(meta.get("kernel_unit", 1.0))
        model = make_simulator(
            meta["kind"], cfg, dim, meta["n_pool"], meta["n_test"], meta["batch_size"], unit
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
            unit,
        )


# Simfluence's free per-pair coefficients learn from few transitions each: a larger step and
# no decay towards the prior beyond what early stopping gives.
SIMFLUENCE_DEFAULTS = FitConfig(lr=1e-2, weight_decay=0.0)
