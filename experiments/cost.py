r"""Per-sample simulation cost (the paper's Table 5): FLOPs and latency of each method.

    python -m experiments.cost --workdir workdirs/finetune_sst2/seed_0 \
        --out experiments/results/cost_sst2.json

"Per sample" is what it takes to predict **one test example's whole trajectory (T steps) for
one new curriculum** (a run). The curriculum is a held-out test run of the workdir (default:
the first one), so no simulator saw it. Every method is measured twice: for one test example
alone ("one sample") and for all N test examples of the workdir at once, divided by N
("amortised": what is shared between test examples, e.g. a checkpoint's training-example
gradients or the simulator MLPs on the batch's examples, is paid once).

* **GPTfluence / Simfluence** (every simulator fitted in ``simulators/<metric>/``): the jitted
  function the simulators' ``rollout`` runs, as ``FittedSimulator.rollout_call`` gives it (the
  coefficient table from the parameters, the batch reduction, the ``lax.scan`` recurrence,
  ``vmap``ped over run and test example).
  *Features excluded*: the frozen MiniLM features are inputs, read from the workdir's cache;
  the simulator's MLPs over them are included. A second GPTfluence row, *features included*,
  adds the MiniLM encoder run from text on the test example(s) and on the run's distinct
  training examples (an upper bound: a pool's features are normally cached once).
* **TracIn-CP** (all steps; k checkpoints, k = ``baselines.num_checkpoints``) and **Grad-Dot**:
  what ``baselines.tracin.simulate_run`` does for the run through a ``GradientEngine`` (the
  pipeline's gradient route and settings): per checkpoint, the per-example gradient features
  of the training examples its steps use and of the test example(s), their inner products,
  then the recurrence. Checkpoints are read from disk before timing (that read is reported
  apart). These methods need the run's own checkpoints, i.e. the run trained: a *new*
  curriculum costs a collection run first (the collection line).
* **Collection** behind every method: seconds per run-step of collecting the training runs,
  from the run store's ``runs/run_*.timing.json`` (each run group's wall time over the run
  steps it made; compilation and checkpoint writes included).

FLOPs: XLA's cost analysis of each compiled function (``jax.jit(f).lower(...).compile()
.cost_analysis()``). XLA counts a ``while`` loop's body once whatever its trip count, so the
body of every ``lax.scan`` is compiled alone and counted ``length`` times (unless a probe
finds that this JAX version already does so). Gradient methods: every compiled call the
engine makes during one prediction is recorded (``GradientEngine.recording``) and costed
(chunks padded to their compiled size included: that work is done). Latency: median wall
time over ``--repeats`` calls after one warm-up call (compilation excluded), on this
machine's default JAX device.

Prints a table, then as its last line one JSON object (also written to ``--out``);
``python -m experiments.report`` renders ``experiments/results/cost*.json`` into
EXPERIMENTS.md's Cost section.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np

from experiments.report import fmt_seconds, simulation_cost_table
from gptjax import io
from gptjax.pipeline.timings import stage_seconds

DEFAULT_GRADIENT_METHODS = ("tracin_cp_all", "tracin_cp_k", "grad_dot")
# JSON key of the GPTfluence row that includes the encoder: "<simulator>+features".
WITH_FEATURES = "+features"
ENCODER_MAX_LEN = 128  # simulator.features.cached_features' default, what the pipeline uses


# ---- FLOPs -----------------------------------------------------------------------------------
def flops_of(cost: Any) -> float | None:
    """The FLOP count of a ``cost_analysis()`` result: a dict (current JAX), a list of dicts
    (older JAX: one per computation, summed), or None where the backend gives none."""
    if cost is None:
        return None
    entries = cost if isinstance(cost, list | tuple) else [cost]
    values = [e.get("flops") for e in entries if isinstance(e, dict)]
    values = [float(v) for v in values if v is not None]
    # XLA reports -1 where it could not count (seen on some GPU backends).
    if not values or any(v < 0 or not math.isfinite(v) for v in values):
        return None
    return float(sum(values))


def _abstract(tree: Any) -> Any:
    """Shapes and dtypes of the arrays only (other leaves, static arguments, kept): lowering
    needs no values, and records keep no buffers alive."""

    def leaf(x: Any) -> Any:
        return jax.ShapeDtypeStruct(np.shape(x), x.dtype) if hasattr(x, "dtype") else x

    return jax.tree.map(leaf, tree)


@functools.cache
def xla_counts_loop_trips() -> bool:
    """Whether XLA's cost analysis already multiplies a loop body by its trip count (it did
    not up to at least JAX 0.10): a probe scan of 1 and of 8 steps."""

    def probe(x: jax.Array, steps: int) -> jax.Array:
        def step(c: jax.Array, _: None) -> tuple[jax.Array, None]:
            return jnp.tanh(c @ x), None

        return jax.lax.scan(step, jnp.ones(x.shape[0], x.dtype), None, length=steps)[0]

    x = jax.ShapeDtypeStruct((16, 16), jnp.float32)
    f = [
        flops_of(jax.jit(probe, static_argnums=1).lower(x, n).compile().cost_analysis())
        for n in (1, 8)
    ]
    return None not in f and f[1] > 4 * f[0]


def _sub_jaxprs(value: Any) -> Iterator[Any]:
    if isinstance(value, jex.ClosedJaxpr):
        yield value.jaxpr
    elif isinstance(value, jex.Jaxpr):
        yield value
    elif isinstance(value, tuple | list):
        for v in value:
            yield from _sub_jaxprs(v)


def _closed_flops(closed: jex.ClosedJaxpr) -> float | None:
    fn = jax.jit(jex.jaxpr_as_fun(closed))
    args = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in closed.in_avals]
    return flops_of(fn.lower(*args).compile().cost_analysis())


def _loop_correction(jaxpr: jex.Jaxpr) -> float | None:
    """FLOPs XLA's analysis leaves out of ``jaxpr``: for every ``scan`` (nested ones too),
    its body's FLOPs times the trip count minus the copies XLA counted. None when a body
    cannot be costed; loops of unknown trip count (``while``) cannot be corrected."""
    extra = 0.0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan":
            body = eqn.params["jaxpr"]
            length = int(eqn.params["length"])
            unroll = eqn.params.get("unroll", 1)
            body_xla, inner = _closed_flops(body), _loop_correction(body.jaxpr)
            if body_xla is None or inner is None:
                return None
            # A scan lowers to a while loop whose body holds `unroll` copies of the step
            # (all of them when unroll is True, and then XLA counts everything).
            counted = length if unroll is True else min(max(int(unroll), 1), length)
            extra += length * (body_xla + inner) - counted * body_xla
            continue
        for sub in (s for v in eqn.params.values() for s in _sub_jaxprs(v)):
            inner = _loop_correction(sub)
            if inner is None:
                return None
            extra += inner
    return extra


def jit_flops(fn: Any, *args: Any, **kwargs: Any) -> float | None:
    """FLOPs of one call of the jitted ``fn`` on these arguments (arrays or
    ``ShapeDtypeStruct``s; static arguments as the function declares them), loop bodies
    counted once per iteration."""
    traced = fn.trace(*args, **kwargs)
    flops = flops_of(traced.lower().compile().cost_analysis())
    if flops is None or xla_counts_loop_trips():
        return flops
    extra = _loop_correction(traced.jaxpr.jaxpr)
    return None if extra is None else flops + extra


# ---- latency ---------------------------------------------------------------------------------
def timed(fn: Callable[[], Any], repeats: int) -> dict[str, float]:
    """Median and minimum wall seconds of ``fn()`` (outputs waited for) over ``repeats``
    calls after one warm-up call, which compiles and fills caches."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(max(int(repeats), 1)):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return {"latency_s": statistics.median(times), "latency_min_s": min(times)}


def _per_sample(measured: dict[str, Any], n: int) -> dict[str, Any]:
    """A measurement over ``n`` test examples expressed per test example."""
    out: dict[str, Any] = {"test_examples": n}
    for key, value in measured.items():
        out[key] = None if value is None else value / n
    return out


# ---- simulators ------------------------------------------------------------------------------
def _rollout_call(
    fitted: Any, curriculum: np.ndarray, y_given: np.ndarray, test_ids: np.ndarray, lr: np.ndarray
) -> Any:
    """The simulator's own prepared rollout (``FittedSimulator.rollout_call``): measuring
    the pipeline's compiled function, not a re-implementation that could hide a cost."""
    return fitted.rollout_call(curriculum, y_given, test_ids, lr=lr)


def rollout_flops(call: Any) -> float | None:
    """FLOPs of one prepared rollout call (``simulator.RolloutCall``)."""
    return jit_flops(call.fn, *call.args, **call.statics)


def simulator_cost(
    fitted: Any,
    curriculum: np.ndarray,
    y_given: np.ndarray,
    test_ids: np.ndarray,
    lr: np.ndarray,
    repeats: int,
) -> dict[str, Any]:
    """FLOPs and latency of rolling out ``test_ids`` over one run.

    curriculum int [1, T, B]; y_given [1, m, len(test_ids)] (the first m true values);
    lr [1, T]. ``flops`` and ``compiled_latency_s`` are the jitted rollout alone (what
    ``FittedSimulator.rollout`` compiles); ``latency_s`` is the whole public call (id
    compaction, transfers, dispatch included)."""
    call = _rollout_call(fitted, curriculum, y_given, test_ids, lr)
    out = {"flops": rollout_flops(call)}
    out["compiled_latency_s"] = timed(call, repeats)["latency_s"]
    out |= timed(lambda: fitted.rollout(curriculum, y_given, test_ids, lr=lr), repeats)
    return out


def rollout_flops_by_steps(
    fitted: Any, curriculum: np.ndarray, y_given: np.ndarray, test_ids: np.ndarray, lr: np.ndarray
) -> list[dict[str, Any]]:
    """[{steps: T, flops}, {steps: 2T, flops}]: the run and the run followed by itself (the
    same distinct examples, so only the per-step work grows): how the cost scales with the
    horizon. Not for an anchored simulator, which rolls out its own horizon only."""
    out = []
    for reps in (1, 2):
        cur = np.concatenate([curriculum] * reps, axis=1)
        rates = np.concatenate([lr] * reps, axis=1)
        call = _rollout_call(fitted, cur, y_given, test_ids, rates)
        out.append({"steps": int(cur.shape[1]), "flops": rollout_flops(call)})
    return out


def encoder_cost(
    texts: Sequence[str], pooling: str, repeats: int, model: Any = None
) -> dict[str, Any]:
    """FLOPs and latency of MiniLM features for ``texts`` from text (one padded batch; the
    tokenizer's time included in the latency)."""
    from flax import nnx

    from gptjax.models.bert import load_bert
    from simulator.features import tokenize

    bert, tok = model if model is not None else load_bert(None)
    graphdef, state = nnx.split(bert)

    @jax.jit
    def encode(state: Any, ids: jax.Array, mask: jax.Array) -> jax.Array:
        m = nnx.merge(graphdef, state)
        return m.pool(m(ids, mask), mask, pooling)

    ids, mask = tokenize(tok, list(texts), ENCODER_MAX_LEN)

    def run() -> jax.Array:
        i, m = tokenize(tok, list(texts), ENCODER_MAX_LEN)
        return encode(state, jnp.asarray(i), jnp.asarray(m))

    return {"flops": jit_flops(encode, state, jnp.asarray(ids), jnp.asarray(mask))} | timed(
        run, repeats
    )


# ---- gradient methods ------------------------------------------------------------------------
# One compiled call of the gradient engine: (name, the jitted function, abstract arguments).
EngineCall = tuple[str, Any, tuple[Any, ...]]


def engine_call_recorder(calls: list[EngineCall]) -> Callable[[str, Any, tuple], None]:
    """A ``GradientEngine`` recorder that appends each compiled call to ``calls``: the
    engine's work per prediction depends on how it chunked the examples, which only it
    knows; each recorded call is costed afterwards."""

    def record(name: str, fn: Any, args: tuple) -> None:
        calls.append((name, fn, _abstract(args)))

    return record


def _signature(leaf: Any) -> Any:
    """A hashable stand-in for one leaf of recorded arguments (static ones are their own)."""
    if isinstance(leaf, jax.ShapeDtypeStruct):
        return (leaf.shape, str(leaf.dtype))
    return leaf


def engine_calls_flops(calls: list[EngineCall]) -> float | None:
    """Summed FLOPs of recorded engine calls (each distinct signature compiled once)."""
    cache: dict[Any, float | None] = {}
    total = 0.0
    for name, fn, args in calls:
        leaves, treedef = jax.tree.flatten(args)
        key = (name, fn, treedef, tuple(_signature(x) for x in leaves))
        if key not in cache:
            cache[key] = jit_flops(fn, *args)
        if cache[key] is None:
            return None
        total += cache[key]
    return total


def _steps_per_checkpoint(
    schedule: np.ndarray, curriculum: np.ndarray, start: int
) -> dict[int, np.ndarray]:
    """{checkpoint step: distinct pool ids its simulated steps use} (as simulate_run)."""
    steps = np.arange(start, curriculum.shape[0] + 1)
    out = {}
    for c in np.unique(schedule[steps - 1]):
        used = curriculum[steps[schedule[steps - 1] == c] - 1]
        out[int(c)] = np.unique(used[used >= 0])
    return out


def gradient_cost(
    engine: Any,
    states: dict[int, Any],
    schedule: np.ndarray,
    curriculum: np.ndarray,
    lr: np.ndarray,
    y_given: np.ndarray,
    train_tokens: dict[str, np.ndarray],
    test_tokens: dict[str, np.ndarray],
    start: int,
    repeats: int,
) -> dict[str, Any]:
    """FLOPs and latency of one run's TracIn-style trajectory for the test examples of
    ``test_tokens``: curriculum [T, B], lr [T], y_given [start, n]; ``states`` holds the
    parameters of every checkpoint the schedule uses (read beforehand)."""
    from baselines.tracin import engine_scorer, simulate_run

    def predict() -> np.ndarray:
        # A fresh scorer each call: its cache would otherwise skip the gradients next time.
        scorer = engine_scorer(engine, states.__getitem__, train_tokens, test_tokens)
        return simulate_run(scorer, schedule, curriculum, lr, y_given, start=start)

    calls: list[EngineCall] = []
    with engine.recording(engine_call_recorder(calls)):
        predict()  # also the warm-up of `timed`: compiled now
    n_test = int(test_tokens["input_ids"].shape[0])
    used = _steps_per_checkpoint(schedule, curriculum, start)
    train_grads = int(sum(len(ids) for ids in used.values()))
    return {
        "flops": engine_calls_flops(calls),
        "checkpoints": len(used),
        "gradients": train_grads + len(used) * n_test,
        "inner_products": train_grads * n_test,
        "compiled_calls": len(calls),
    } | timed(predict, repeats)


# ---- collection ------------------------------------------------------------------------------
def collection_cost(store: Any, num_runs: int, steps: int) -> dict[str, Any] | None:
    """Seconds per run-step of collecting the runs, from their timing files: each run group's
    wall time (its runs were trained together) over the run steps it made."""
    groups: dict[tuple[int, ...], float] = {}
    devices = set()
    for run in range(num_runs):
        path = store.timing_file(run)
        if not path.is_file():
            continue
        timing = io.read_json(path)
        group = tuple(int(r) for r in timing.get("group", [run]))
        groups[group] = float(timing["wall_s"])
        devices.add(int(timing.get("devices", 1)))
    if not groups:
        return None
    run_steps = sum(len(g) for g in groups) * steps
    wall = sum(groups.values())
    return {
        "seconds_per_run_step": wall / run_steps,
        "seconds_per_run": wall / run_steps * steps,
        "wall_s": wall,
        "run_steps": run_steps,
        "groups": len(groups),
        "devices": sorted(devices),
    }


# ---- the whole measurement -------------------------------------------------------------------
def _label(name: str) -> str:
    from experiments.report import METHODS

    if name.endswith(WITH_FEATURES):
        return f"{_label(name[: -len(WITH_FEATURES)])}, features included"
    return METHODS.get(name, name)


def _combine(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two costs paid one after the other (the encoder, then the rollout)."""
    out = {}
    for key in ("flops", "latency_s", "latency_min_s"):
        va, vb = a.get(key), b.get(key)
        out[key] = None if va is None or vb is None else va + vb
    return out


def measure(
    workdir: str | os.PathLike,
    *,
    metric: str = "loss",
    run: int | None = None,
    test_id: int = 0,
    repeats: int = 5,
    simulators: Sequence[str] | None = None,
    gradient_methods: Sequence[str] = DEFAULT_GRADIENT_METHODS,
    encoder: bool = True,
) -> dict[str, Any]:
    """The cost record of a finished workdir (see the module docstring)."""
    from gptjax.pipeline import queries

    ow = queries.open_workdir(workdir)
    dyn = ow.dynamics
    y = ow.metric_values(metric)
    run = ow.split["test"][0] if run is None else int(run)
    test_id = ow.check_test_id(test_id)
    steps, batch = dyn.curricula.shape[1:]
    curriculum = dyn.curricula[run]
    n = ow.num_test
    record: dict[str, Any] = {
        "workdir": str(workdir),
        "metric": metric,
        "run": run,
        "test_id": test_id,
        "steps": int(steps),
        "batch_size": int(batch),
        "test_examples": n,
        "distinct_train_examples": int(np.unique(curriculum[curriculum >= 0]).size),
        "repeats": int(repeats),
        "device": f"{jax.devices()[0].platform}: {jax.devices()[0].device_kind}",
        "cpu_count": os.cpu_count(),
        "jax_version": jax.__version__,
        "loop_bodies_multiplied": not xla_counts_loop_trips(),
        "methods": [],  # a list: the rows keep their order in a key-sorted JSON file
    }
    methods = record["methods"]
    for name in _simulator_names(ow, metric) if simulators is None else simulators:
        methods += _simulator_rows(ow, name, metric, run, test_id, y, repeats, encoder)
    for name in gradient_methods:
        methods.append(_gradient_row(ow, name, metric, run, test_id, y, repeats))
    collection = collection_cost(ow.wd.runs, dyn.num_runs, int(steps))
    if collection is not None:
        collection["collect_stage_s"] = stage_seconds(ow.wd.results_dir).get("collect")
    record["collection"] = collection
    return record


def _simulator_names(ow: Any, metric: str) -> list[str]:
    from experiments.report import METHODS
    from simulator import FittedSimulator

    root = ow.root / "simulators" / metric
    found = [p.name for p in sorted(root.glob("*")) if FittedSimulator.exists(p)]
    return [m for m in METHODS if m in found] + [m for m in found if m not in METHODS]


def _simulator_rows(
    ow: Any,
    name: str,
    metric: str,
    run: int,
    test_id: int,
    y: np.ndarray,
    repeats: int,
    encoder: bool,
) -> list[dict[str, Any]]:
    fitted = ow.simulator(metric, name)
    start = int(ow.config.simulator.start)
    curriculum, lr = ow.dynamics.curricula[run : run + 1], ow.dynamics.lr[run : run + 1]
    single_ids, all_ids = np.array([test_id]), np.arange(ow.num_test)
    single = simulator_cost(
        fitted, curriculum, y[run : run + 1, :start][:, :, single_ids], single_ids, lr, repeats
    )
    every = simulator_cost(fitted, curriculum, y[run : run + 1, :start], all_ids, lr, repeats)
    row: dict[str, Any] = {
        "name": name,
        "label": _label(name),
        "kind": fitted.kind,
        "features": "excluded (cached)" if fitted.kind == "gptfluence" else "none",
        "needs_trained_run": False,
        "single": single,
        "amortised": _per_sample(every, ow.num_test),
    }
    if fitted.anchor_traj is None:
        row["flops_by_steps"] = rollout_flops_by_steps(
            fitted, curriculum, y[run : run + 1, :start][:, :, single_ids], single_ids, lr
        )
    else:
        row["flops_by_steps"] = None  # an anchored simulator rolls out its own horizon only
    rows = [row]
    if fitted.kind != "gptfluence" or not encoder:
        return rows
    try:
        from gptjax.models.bert import load_bert

        model = load_bert(None)
    except (FileNotFoundError, OSError) as err:
        label = _label(name + WITH_FEATURES)
        return [*rows, {"name": name + WITH_FEATURES, "label": label, "unavailable": str(err)}]
    pooling = str(ow.config.simulator.pooling)
    cur = curriculum[0]
    train_texts = [ow.pool_example(int(i))["encoder_text"] for i in np.unique(cur[cur >= 0])]
    test_texts = [e["encoder_text"] for e in ow.pools["test"]]
    enc_single = encoder_cost([test_texts[test_id], *train_texts], pooling, repeats, model)
    enc_every = encoder_cost([*test_texts, *train_texts], pooling, repeats, model)
    rows.append(
        {
            "name": name + WITH_FEATURES,
            "label": _label(name + WITH_FEATURES),
            "kind": fitted.kind,
            "features": "included (MiniLM on the test example(s) and the run's training examples)",
            "needs_trained_run": False,
            "single": _combine(enc_single, single) | {"encoder": enc_single},
            "amortised": _per_sample(_combine(enc_every, every), ow.num_test)
            | {"encoder": _per_sample(enc_every, ow.num_test)},
        }
    )
    return rows


def _gradient_row(
    ow: Any, name: str, metric: str, run: int, test_id: int, y: np.ndarray, repeats: int
) -> dict[str, Any]:
    from flax import nnx

    from baselines import GRADIENT_METHODS, GradientEngine, checkpoint_schedule
    from baselines.grads import take
    from gptjax.pipeline import config as config_lib

    bc = ow.config.baselines
    if name not in GRADIENT_METHODS:
        raise ValueError(f"unknown gradient method {name!r}; known: {list(GRADIENT_METHODS)}")
    mode, layers = GRADIENT_METHODS[name]
    k = int(bc.num_checkpoints)
    # The report's names say "10 checkpoints" (the paper's k); say the k that was used.
    label = _label(name).replace("10 checkpoints", f"{k} checkpoints")
    row: dict[str, Any] = {"name": name, "label": label, "kind": "gradient"}
    if metric != bc.loss_metric:
        return row | {"unavailable": f"gradient methods predict {bc.loss_metric!r} only"}
    if not ow.wd.runs.checkpoint_dir(run).is_dir():
        return row | {"unavailable": f"run {run} saved no parameters (collect.save_params)"}
    base, params_at, saved_steps, (pool_tokens, test_tokens) = ow.gradient_inputs
    steps = ow.dynamics.curricula.shape[1]
    start = int(bc.start)
    schedule = checkpoint_schedule(saved_steps(run), steps, mode, k)
    t0 = time.perf_counter()
    states = {int(c): params_at(run, int(c)) for c in np.unique(schedule[start - 1 :])}
    read_s = time.perf_counter() - t0
    grad_config = dataclasses.replace(config_lib.grad_config(bc), layers=layers)
    like = next(iter(states.values()))
    engine = GradientEngine(
        nnx.split(base)[0],
        like,
        grad_config,
        first_layer=config_lib.first_layer(ow.config, base),
    )
    curriculum, lr = ow.dynamics.curricula[run], ow.dynamics.lr[run]
    # A partially fine-tuned model's frozen blocks: their output is computed once (as in the
    # collection), not per prediction; its time is reported apart.
    t0 = time.perf_counter()
    pool_tokens = engine.attach_residuals(like, pool_tokens)
    test_tokens = engine.attach_residuals(like, test_tokens)
    trunk_s = time.perf_counter() - t0

    def cost(ids: np.ndarray) -> dict[str, Any]:
        return gradient_cost(
            engine,
            states,
            schedule,
            curriculum,
            lr,
            y[run, :start][:, ids],
            pool_tokens,
            take(test_tokens, ids),
            start,
            repeats,
        )

    single, every = cost(np.array([test_id])), cost(np.arange(ow.num_test))
    counts = ("checkpoints", "gradients", "inner_products", "compiled_calls")
    amortised = {key: every.pop(key) for key in counts}
    row |= {
        "needs_trained_run": True,
        "mode": mode,
        "num_checkpoints": k if mode == "k" else None,
        "grad_config": dataclasses.asdict(grad_config),
        "checkpoint_read_s": read_s,
        "frozen_trunk_s": trunk_s,
        "single": single,
        "amortised": _per_sample(every, ow.num_test) | {"totals": amortised},
    }
    if name == "tracin_cp_all" and ow.dynamics.tracin_dots is not None:
        row["note"] = (
            "this workdir recorded the inner products during collection (collect.tracin_dots), "
            "so its baselines stage computes no gradient; the cost here is the engine's"
        )
    return row


# ---- output ----------------------------------------------------------------------------------
def summary(record: dict[str, Any]) -> str:
    """The lines printed before the table: the setting and the collection cost."""
    lines = [
        f"{record['workdir']}: run {record['run']} ({record['steps']} steps of batch "
        f"{record['batch_size']}, {record['distinct_train_examples']} distinct training "
        f"examples), metric {record['metric']}, {record['test_examples']} test examples; "
        f"{record['device']}, median of {record['repeats']} calls after a warm-up"
    ]
    c = record.get("collection")
    if c:
        lines.append(
            f"collection: {fmt_seconds(c['seconds_per_run_step'])} per run-step "
            f"({fmt_seconds(c['seconds_per_run'])} per run; {c['run_steps']} run-steps in "
            f"{c['groups']} group(s))"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="a finished pipeline workdir")
    parser.add_argument("--out", default=None, help="write the JSON record here too")
    parser.add_argument("--metric", default="loss")
    parser.add_argument("--run", type=int, default=None, help="default: the first test run")
    parser.add_argument("--test_id", type=int, default=0, help="the one-sample test example")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls after a warm-up")
    parser.add_argument(
        "--simulators", default=None, help="comma-separated (default: every fitted one)"
    )
    parser.add_argument("--gradient_methods", default=",".join(DEFAULT_GRADIENT_METHODS))
    parser.add_argument("--no_encoder", action="store_true", help="skip 'features included'")
    args = parser.parse_args(argv)
    from gptjax.cli import quiet_orbax

    quiet_orbax()
    names = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731
    record = measure(
        args.workdir,
        metric=args.metric,
        run=args.run,
        test_id=args.test_id,
        repeats=args.repeats,
        simulators=None if args.simulators is None else names(args.simulators),
        gradient_methods=names(args.gradient_methods),
        encoder=not args.no_encoder,
    )
    record["command"] = "python -m experiments.cost " + " ".join(
        a for a in (argv if argv is not None else sys.argv[1:])
    )
    if args.out:
        io.atomic_write_json(Path(args.out), record)
    print(summary(record))
    print("\n".join(simulation_cost_table(record)))
    print(json.dumps(io.json_safe(record), allow_nan=False, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
