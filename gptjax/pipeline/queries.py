"""Queries on a finished workdir: which training examples helped or hurt a test example, what
another curriculum would do, which labels look wrong, and (demo tasks) how well the simulator
finds the examples that really matter.

    from gptjax.pipeline.queries import (
        mislabel_ranking, simulate_curriculum, top_influences, top_k_precision)

    top_influences("workdirs/demo", test_id=3, k=5)       # GPTfluence beside TracIn
    simulate_curriculum("workdirs/demo", [[0, 5], [7, 1]])  # [T+1, N] trajectories
    mislabel_ranking("workdirs/demo")                     # pool ids, most suspicious first
    top_k_precision("workdirs/demo", k=5)                 # demo: vs ground-truth relatedness

Each function takes a workdir path (or a `Workdir`, or an `open_workdir` result, which
caches what it read so that several queries load the runs and simulators once) and returns
plain dicts and arrays (``gptjax.io.atomic_write_json`` writes them as strict JSON).

Everything is read back from the workdir: the config from ``config.json``, the texts from
``data/pools.json``, the runs from ``runs/``, the simulator from
``simulators/<metric>/<name>/``. Nothing is fitted or written. A missing or unfinished
workdir, an unknown test id, simulator or text is a `QueryError` (a ValueError) naming it.

Sign conventions (``simulator.influence``): an *effect* is the change of the metric an
example causes (positive: raises it). For the loss lower is better, so a helpful example has
a negative effect; for BLEU / ROUGE-L a helpful one has a positive effect. TracIn's effect is
minus its score, so both columns read the same way.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from gptjax import io
from gptjax.evaluation import NOT_APPLICABLE_REASON, spearman
from gptjax.pipeline import config as config_lib
from gptjax.pipeline.stages import run_split
from gptjax.pipeline.workdir import Workdir
from gptjax.store import Dynamics
from gptjax.tasks import Example, Pools
from simulator import FittedSimulator, influence
from simulator.training import restore_verified

LOWER_IS_BETTER = ("loss",)  # every other recorded metric (bleu, rougeL) is higher-is-better


class QueryError(ValueError):
    """A query the workdir cannot answer (missing files, unknown ids or texts)."""


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


def example_of_row(row: dict[str, Any]) -> Example:
    names = {f.name for f in dataclasses.fields(Example)}
    fields = {k: v for k, v in row.items() if k in names}
    fields["references"] = tuple(fields.get("references") or ())
    return Example(**fields)


class OpenWorkdir:
    """A finished workdir opened for queries; what it reads is cached on the object."""

    def __init__(self, root: str | os.PathLike | Workdir):
        self.wd = root if isinstance(root, Workdir) else Workdir(root)
        root = self.wd.root
        if not root.is_dir():
            raise QueryError(f"no such workdir: {root}")
        for path in (self.wd.config_file, self.wd.pools_file):
            if not path.is_file():
                raise QueryError(
                    f"{root} is not a finished workdir: {path} is missing (run "
                    f"`python -m gptjax.main --config CONFIG --workdir {root}` first)"
                )
        self.config = ml_collections.ConfigDict(io.read_json(self.wd.config_file))
        self.pools = io.read_json(self.wd.pools_file)
        for key in ("train", "unseen", "test"):
            if not isinstance(self.pools.get(key), list):
                raise QueryError(f"{self.wd.pools_file}: no {key!r} list of examples")
        self._simulators: dict[tuple[str, str], FittedSimulator] = {}
        self._effects: dict[tuple[str, str], np.ndarray] = {}

    # ---- what the workdir holds ----------------------------------------------------------
    @property
    def root(self) -> Path:
        return self.wd.root

    @property
    def num_train(self) -> int:
        """P: pool ids 0..P-1 are the training pool the runs drew from."""
        return len(self.pools["train"])

    @property
    def num_pool(self) -> int:
        """P + U: the training pool then the unseen pool."""
        return len(self.pools["train"]) + len(self.pools["unseen"])

    @property
    def num_test(self) -> int:
        return len(self.pools["test"])

    def pool_example(self, pool_id: int) -> dict[str, Any]:
        p = self.num_train
        return self.pools["train"][pool_id] if pool_id < p else self.pools["unseen"][pool_id - p]

    def flipped(self, pool_id: int) -> bool | None:
        flipped = self.pools.get("flipped")
        return None if flipped is None else bool(flipped[pool_id])

    @functools.cached_property
    def relatedness(self) -> np.ndarray | None:
        """[P+U, N] ground truth (demo tasks), else None."""
        path = self.wd.relatedness_file
        return np.load(path) if path.is_file() else None

    @functools.cached_property
    def dynamics(self) -> Dynamics:
        return self.wd.runs.load(self.config.collect.num_runs)

    @functools.cached_property
    def split(self) -> dict[str, list[int]]:
        """The train / val / test runs, as the simulate stage split them."""
        return run_split(self.config, self.dynamics)

    def metric_values(self, metric: str) -> np.ndarray:
        """[K, T+1, N] recorded values of ``metric``."""
        if metric not in self.dynamics.metrics:
            raise QueryError(
                f"metric {metric!r} was not recorded; the runs hold {sorted(self.dynamics.metrics)}"
            )
        return self.dynamics.metrics[metric]

    def y0(self, metric: str) -> np.ndarray:
        """[N] the base model's values (step 0 of the valid runs, which all start from it)."""
        y = self.metric_values(metric)
        return y[self.dynamics.valid, 0].mean(0)

    def y_ref(self, metric: str) -> np.ndarray:
        """[N] the state one-step effects are taken at: the training runs' mean over steps."""
        # nanmean: metrics measured every few steps (BLEU, ROUGE-L) are NaN in between.
        return np.nanmean(self.metric_values(metric)[self.split["train"]], axis=(0, 1))

    def check_test_id(self, test_id: Any) -> int:
        if isinstance(test_id, bool) or not isinstance(test_id, int | np.integer):
            raise QueryError(f"test id must be an integer, got {test_id!r}")
        if not 0 <= int(test_id) < self.num_test:
            raise QueryError(
                f"test example {test_id} is out of range: {self.root} has {self.num_test} "
                f"test examples (0..{self.num_test - 1})"
            )
        return int(test_id)

    def check_k(self, k: Any) -> int:
        """k of a top-k query: 1..P."""
        n = self.num_train
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= n:
            raise QueryError(
                f"k must be an integer in 1..{n} (the training pool's size), got {k!r}"
            )
        return int(k)

    def simulator(self, metric: str, name: str) -> FittedSimulator:
        key = (metric, name)
        if key not in self._simulators:
            path = self.wd.simulator_dir(metric, name)
            if not FittedSimulator.exists(path):
                found = sorted(
                    f"{p.parent.parent.name}/{p.parent.name}"
                    for p in (self.root / "simulators").glob("*/*/meta.json")
                )
                raise QueryError(
                    f"no fitted simulator {name!r} for metric {metric!r} in {self.root} "
                    f"({path} has no meta.json; fitted: {', '.join(found) or 'none'}); run the "
                    "simulate stage first"
                )
            try:
                fitted = restore_verified(path)
            except ValueError as err:
                raise QueryError(str(err)) from None
            if (fitted.n_pool, fitted.n_test) != (self.num_pool, self.num_test):
                raise QueryError(
                    f"{path} was fitted on {fitted.n_pool} pool / {fitted.n_test} test "
                    f"examples, but {self.wd.pools_file} holds {self.num_pool} / {self.num_test}"
                )
            self._simulators[key] = fitted
        return self._simulators[key]

    def effects(self, metric: str, name: str) -> np.ndarray:
        """[P+U, N] one-step effects of every pool example on every test example, at the
        training runs' mean state (``simulator.influence.fitted_effects``)."""
        key = (metric, name)
        if key not in self._effects:
            fitted = self.simulator(metric, name)
            self._effects[key] = influence.fitted_effects(
                fitted, "one_step", y_ref=self.y_ref(metric)
            )
        return self._effects[key]

    # ---- TracIn --------------------------------------------------------------------------
    @functools.cached_property
    def gradient_inputs(self) -> tuple[Any, Any, Any, Any]:
        """(base model, params_at, saved_steps, (pool tokens, test tokens))."""
        from gptjax.collect.checkpoints import params_reader
        from gptjax.models.checkpoint import restore_model
        from gptjax.pipeline.preparation import load_base_model
        from gptjax.tasks import tokenize_examples

        pools = Pools(
            train=[example_of_row(r) for r in self.pools["train"]],
            unseen=[example_of_row(r) for r in self.pools["unseen"]],
            test=[example_of_row(r) for r in self.pools["test"]],
            flipped=np.asarray(self.pools.get("flipped", []), bool),
            task_of_train=list(self.pools.get("task_of_train", [])),
            task_of_test=list(self.pools.get("task_of_test", [])),
            relatedness=None,
        )
        _, tokenizer = load_base_model(self.config, pools)  # the tokenizer the runs used
        base = restore_model(self.wd.model_dir)  # the model the runs started from
        params_at, saved_steps = params_reader(self.wd.runs, base)
        max_len = self.config.data.max_len
        tokens = (
            tokenize_examples(pools.pool, tokenizer, max_len=max_len).loss_inputs(),
            tokenize_examples(pools.test, tokenizer, max_len=max_len).loss_inputs(),
        )
        return base, params_at, saved_steps, tokens

    def tracin(self, test_id: int, metric: str, run: int | None = None) -> dict[str, Any]:
        """TracIn-CP effects [P] of the training pool on one test example, over the saved
        checkpoints of one run (default: the first training run, or the first test run when
        only the test runs saved: collect.save_params_runs = "test"), or why there are none."""
        from flax import nnx

        from baselines import GradientEngine, checkpoint_schedule, tracin_scores
        from baselines.grads import take
        from baselines.tracin import checkpoint_weights

        bc = self.config.baselines
        out: dict[str, Any] = {"available": False, "reason": None, "run": None}
        if metric != bc.loss_metric:
            out["reason"] = f"{NOT_APPLICABLE_REASON} ({bc.loss_metric!r}), not {metric!r}"
            return out
        saved = lambda k: self.wd.runs.checkpoint_dir(k).is_dir()  # noqa: E731
        if run is None:
            candidates = self.split["train"] + self.split["test"]
            run = next((k for k in candidates if saved(k)), self.split["train"][0])
        run = int(run)
        if not 0 <= run < self.dynamics.num_runs:
            raise QueryError(f"run {run} is out of range 0..{self.dynamics.num_runs - 1}")
        out["run"] = run
        if not saved(run):
            c = self.config.collect
            which = c.get("save_params_runs", "all")  # a workdir from before the key: all
            out["reason"] = (
                f"run {run} saved no parameters (collect.save_params is {c.save_params!r}, "
                f"collect.save_params_runs {which!r}); collect with e.g. 'all' or 'evenly:10'"
            )
            return out
        base, params_at, saved_steps, (pool_tokens, test_tokens) = self.gradient_inputs
        steps = self.dynamics.curricula.shape[1]
        schedule = checkpoint_schedule(saved_steps(run), steps, "k", k=int(bc.num_checkpoints))
        weights = checkpoint_weights(schedule, self.dynamics.lr[run])
        states = [params_at(run, step) for step in weights]
        engine = GradientEngine(
            nnx.split(base)[0],
            states[0],
            dataclasses.replace(config_lib.grad_config(bc), layers="all"),
            first_layer=config_lib.first_layer(self.config, base),
        )
        scores = tracin_scores(
            engine,
            states,
            list(weights.values()),
            take(pool_tokens, np.arange(self.num_train)),
            take(test_tokens, [test_id]),
        )[:, 0]
        return out | {
            "available": True,
            "checkpoints": sorted(weights),
            "checkpoint_weights": [weights[s] for s in sorted(weights)],
            "effects": -scores,  # first-order change of the test loss: negative = helpful
        }


def open_workdir(workdir: str | os.PathLike | Workdir | OpenWorkdir) -> OpenWorkdir:
    """An `OpenWorkdir` (given one, the same object: its caches are reused)."""
    return workdir if isinstance(workdir, OpenWorkdir) else OpenWorkdir(workdir)


def _row(ow: OpenWorkdir, rank: int, pool_id: int, test_id: int | None = None) -> dict:
    ex = ow.pool_example(pool_id)
    row = {
        "rank": rank,
        "pool_id": pool_id,
        "input": ex["input"],
        "target": ex["target"],
        "flipped": ow.flipped(pool_id),
    }
    if test_id is not None:
        rel = ow.relatedness
        row["related"] = None if rel is None else bool(rel[pool_id, test_id] > 0)
    return row


def _ranked(ow, effects: np.ndarray, test_id: int, k: int, hib: bool) -> dict[str, list]:
    """The k most helpful and most harmful rows, best / worst first, from [P] effects."""
    helpful, harmful = influence.top_k(effects[:, None], 0, k, higher_is_better=hib)
    return {
        kind: [
            _row(ow, r + 1, i, test_id) | {"effect": float(effects[i])}
            for r, i in enumerate(ids.tolist())
        ]
        for kind, ids in (("helpful", helpful), ("harmful", harmful))
    }


def top_influences(
    workdir: str | os.PathLike | Workdir | OpenWorkdir,
    test_id: int,
    k: int = 5,
    metric: str = "loss",
    simulator: str = "gptfluence",
    *,
    tracin: bool = True,
    tracin_run: int | None = None,
) -> dict[str, Any]:
    """The k most helpful and k most harmful training-pool examples for test example
    ``test_id``, by the simulator's one-step effects and, beside them, by TracIn-CP.

    Returns ``{"test": {...}, "simulator": {"helpful": rows, "harmful": rows, ...},
    "tracin": {"available": bool, "reason", "run", "checkpoints", "helpful", "harmful"},
    "agreement": {...}}``; a row is ``{rank, pool_id, input, target, effect, flipped,
    related}`` (``related``: the demo's ground truth, else None). Effects are the change of
    ``metric`` the example causes in one step (see the module docstring for signs).
    """
    ow = open_workdir(workdir)
    test_id = ow.check_test_id(test_id)
    k = ow.check_k(k)
    hib = higher_is_better(metric)
    p = ow.num_train
    sim_effects = ow.effects(metric, simulator)[:p, test_id]
    test = ow.pools["test"][test_id]
    result: dict[str, Any] = {
        "workdir": str(ow.root),
        "metric": metric,
        "higher_is_better": hib,
        "k": k,
        "test_id": test_id,
        "test": {
            "input": test["input"],
            "target": test["target"],
            "y0": float(ow.y0(metric)[test_id]),
            "y_ref": float(ow.y_ref(metric)[test_id]),
        },
        "simulator": {"name": simulator, **_ranked(ow, sim_effects, test_id, k, hib)},
    }
    if not tracin:
        result["tracin"] = {"available": False, "reason": "not asked for", "run": None}
        return result
    tr = ow.tracin(test_id, metric, tracin_run)
    if tr["available"]:
        effects = tr.pop("effects")
        tr |= _ranked(ow, effects, test_id, k, hib)
        sim_help = {r["pool_id"] for r in result["simulator"]["helpful"]}
        tr_help = {r["pool_id"] for r in tr["helpful"]}
        result["agreement"] = {
            "helpful_overlap": len(sim_help & tr_help),
            "spearman": float(spearman(sim_effects, effects)),
        }
    result["tracin"] = tr
    return result


def _resolve_item(ow: OpenWorkdir, item: Any, index: dict[str, set[int]]) -> int | str:
    """A pool id, or the text itself when it matches no pool example (reported later)."""
    if isinstance(item, str):
        ids = index.get(item, set())
        if len(ids) > 1:
            raise QueryError(
                f"text {item!r} matches pool examples {sorted(ids)}: give the pool id instead"
            )
        return next(iter(ids)) if ids else item
    if isinstance(item, bool) or not isinstance(item, int | np.integer):
        raise QueryError(f"a batch item must be a pool id or a text, got {item!r}")
    if not 0 <= int(item) < ow.num_pool:
        raise QueryError(f"pool id {item} is out of range 0..{ow.num_pool - 1}")
    return int(item)


def curriculum_ids(workdir, batches: Sequence[Sequence[int | str]]) -> np.ndarray:
    """int [T, B] pool ids of a curriculum given as batches of pool ids or texts (a text is
    matched exactly against every pool example's ``input`` and ``encoder_text``); short
    batches are padded with -1 (an empty slot)."""
    ow = open_workdir(workdir)
    if isinstance(batches, str | bytes) or not isinstance(batches, Sequence) or not batches:
        raise QueryError("a curriculum is a non-empty list of batches (lists of ids or texts)")
    index: dict[str, set[int]] = {}
    for i in range(ow.num_pool):
        ex = ow.pool_example(i)
        for text in {ex.get("input"), ex.get("encoder_text")} - {None}:
            index.setdefault(text, set()).add(i)
    rows, unknown = [], []
    for t, batch in enumerate(batches):
        if isinstance(batch, str | bytes) or not isinstance(batch, Sequence) or not batch:
            raise QueryError(f"batch {t} must be a non-empty list of pool ids or texts")
        row = [_resolve_item(ow, item, index) for item in batch]
        unknown += [item for item in row if isinstance(item, str)]
        rows.append(row)
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise QueryError(
            f"{len(unknown)} text(s) match no pool example's input or encoder_text: {shown}{more}"
        )
    width = max(len(r) for r in rows)
    return np.array([r + [-1] * (width - len(r)) for r in rows], np.int32)


def simulate_curriculum(
    workdir: str | os.PathLike | Workdir | OpenWorkdir,
    batches: Sequence[Sequence[int | str]],
    metric: str = "loss",
    simulator: str = "gptfluence",
    lr: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Simulated trajectories of every test example under a curriculum (a list of batches,
    each a list of pool ids or texts), from the base model's values y_0 (step 0 of the runs).

    Returns ``{"curriculum": int [T, B] (-1 = empty slot), "trajectories": [T+1, N],
    "y0": [N], "mean": [T+1], "warnings": [...]}``; a warning says when the batches differ
    in size from the runs' batches and the simulator sums over a batch (its coefficients
    then no longer add up to a step of the size it learned). ``lr`` ([T]) is the
    learning-rate schedule, needed only by simulators fitted with ``lr_scale`` whose training
    runs had another number of steps.
    """
    ow = open_workdir(workdir)
    curriculum = curriculum_ids(ow, batches)
    fitted = ow.simulator(metric, simulator)
    y0 = ow.y0(metric)
    lr_arr = None if lr is None else np.asarray(lr, np.float64)[None]
    traj = fitted.rollout(curriculum[None], y0[None], lr=lr_arr)[0]
    sizes = sorted({int(n) for n in (curriculum >= 0).sum(1)})
    warnings = []
    if fitted.config.batch_reduce == "sum" and sizes != [fitted.batch_size]:
        warnings.append(
            f"batches of {', '.join(map(str, sizes))} examples: this simulator sums its "
            f"coefficients over batches of {fitted.batch_size} (batch_reduce='sum'), so other "
            "batch sizes are out of its training distribution"
        )
    return {
        "workdir": str(ow.root),
        "metric": metric,
        "higher_is_better": higher_is_better(metric),
        "simulator": simulator,
        "curriculum": curriculum,
        "y0": y0,
        "trajectories": traj,
        "mean": traj.mean(axis=1),
        "warnings": warnings,
    }


def mislabel_ranking(
    workdir: str | os.PathLike | Workdir | OpenWorkdir,
    metric: str = "loss",
    simulator: str = "gptfluence",
    k: int | None = None,
) -> dict[str, Any]:
    """The training pool ranked by suspicion (``simulator.influence.mislabel_ranking``: summed
    harmful one-step effect over the test examples), most suspicious first; with the labels
    flipped on purpose (``flipped`` in data/pools.json) where the pools record them.

    Returns ``{"ranking": rows (the first k, default all), "flipped_total",
    "flipped_in_top", "random_in_top"}``; a row's ``harm`` is the score ranked by.
    ``flipped_in_top``: flipped examples among the first ``flipped_total`` of the ranking;
    ``random_in_top``: what a random order finds there on average.
    """
    ow = open_workdir(workdir)
    p = ow.num_train
    k = p if k is None else ow.check_k(k)
    hib = higher_is_better(metric)
    scores = ow.effects(metric, simulator)[:p]
    order = influence.mislabel_ranking(scores, higher_is_better=hib)
    harm = np.maximum(scores if not hib else -scores, 0.0).sum(1)  # what order sorts by
    rows = [
        _row(ow, rank + 1, i) | {"harm": float(harm[i])}
        for rank, i in enumerate(order[:k].tolist())
    ]
    out: dict[str, Any] = {
        "workdir": str(ow.root),
        "metric": metric,
        "simulator": simulator,
        "ranking": rows,
        "flipped_total": None,
        "flipped_in_top": None,
        "random_in_top": None,
    }
    if ow.pools.get("flipped") is not None:
        flipped = np.asarray(ow.pools["flipped"][:p], bool)
        n = int(flipped.sum())
        out["flipped_total"] = n
        out["flipped_in_top"] = int(flipped[order[:n]].sum())
        out["random_in_top"] = n * n / p
    return out


def top_k_precision(
    workdir: str | os.PathLike | Workdir | OpenWorkdir,
    k: int = 5,
    metric: str = "loss",
    simulator: str = "gptfluence",
) -> dict[str, Any]:
    """Demo tasks: the fraction of the simulator's k most helpful training examples that are
    truly related to the test example (``data/relatedness.npy``), averaged over the test
    examples, beside a random choice's expected precision (the share of related examples in
    the training pool, averaged the same way).
    """
    ow = open_workdir(workdir)
    rel = ow.relatedness
    if rel is None:
        raise QueryError(
            f"{ow.wd.relatedness_file} does not exist: only the demo tasks have ground-truth "
            "relatedness"
        )
    p = ow.num_train
    k = ow.check_k(k)
    rel = np.asarray(rel[:p] > 0, np.float64)
    scores = ow.effects(metric, simulator)[:p]
    hib = higher_is_better(metric)
    per_test = np.array(
        [rel[influence.top_k(scores, n, k, hib)[0], n].mean() for n in range(ow.num_test)]
    )
    return {
        "workdir": str(ow.root),
        "metric": metric,
        "simulator": simulator,
        "k": k,
        "precision": float(per_test.mean()),
        "random": float(rel.mean(0).mean()),
        "per_test": per_test,
        "num_test": ow.num_test,
        "num_train": p,
    }
