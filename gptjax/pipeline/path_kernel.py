"""The gradient kernel along the training runs' mean path, Adam-preconditioned: the kernel
features of ``gptfluence_kernel`` and ``gradient_kernel`` (``simulator/gptfluence.py``)
unless ``simulator.kernel_checkpoints = 1`` and ``simulator.kernel_precondition = "none"``
(then the base model's projected gradients of `gradient_features`, the first version).

    K(i, j) = (1/C) Σ_c ⟨(g_i^c − ḡ^c) ⊘ (√v^c + ε), g_j^c⟩

* g^c: per-example loss gradients at θ̄_c, the mean of the training runs' parameters after
  step s_c; C steps s_c evenly spaced over the saved steps in 0..T-1 (step 0: the base
  model). Fine-tuning moves the model away from the base, and a batch keeps acting on later
  steps, so the kernel that tells how a batch moves a test loss is the one along the way, not
  at the start. The average, not a kernel per step: on the validation data the average
  predicted the runs better than matching each step to its own checkpoint.
* ḡ^c: the pool's mean gradient (the pool side is centred: a batch moves a test loss only by
  how its examples differ from the pool's average, which the mean trajectory holds).
* v^c = (ḡ^c)² + Var_pool(g^c) / B elementwise, B the batch size: the expected square of a
  batch's mean gradient, what AdamW's second moment estimates while it fine-tunes (its update
  is m̂ / (√v̂ + ε)). So a pool example's gradient enters as Adam would move the parameters by
  it (``kernel_precondition = "adam"``; "none": v = 1, plain gradients).

Inner products are exact: the gradients are explicit (``GradientEngine`` with no
factorisation and no projection). When the pool's and the test set's gradients fit in
``baselines.memory_budget_mb`` they are held at once; otherwise only the test set's (at most
half the budget) and the pool's are streamed twice (`streamed_kernel_at`). As simulator
features: the training side is K [P, N] (row i: example i's kernel with every test example)
divided by its root mean square entry r, the test side the identity [N, N], so
⟨φ_i, φ'_j⟩ = K(i, j) / r. K is
cached in the workdir, keyed by the tokens, the settings and the mean parameters at every
step used.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

from baselines import GradConfig, GradientEngine
from gptjax.collect.checkpoints import params_reader
from gptjax.io import fingerprint
from gptjax.pipeline import config as config_lib
from gptjax.pipeline.preparation import Prepared
from gptjax.pipeline.workdir import Workdir
from simulator.features import cache_path, features_key, load_or_compute

ADAM_EPS = 1e-8  # AdamW's ε in the collection runs (CollectSpec.eps)


def path_steps(saved: Sequence[int], num_steps: int, count: int) -> list[int]:
    """``count`` steps evenly spaced over the saved steps in 0..num_steps-1 (all of them when
    fewer are saved); always starts at 0, the base model."""
    if count < 1:
        raise ValueError(f"the path kernel needs at least one step, got {count}")
    avail = sorted({0, *(int(s) for s in saved if 0 <= int(s) < num_steps)})
    if len(avail) <= count:
        return avail
    # The saved step nearest to each evenly spaced target, without repeats.
    out: list[int] = []
    for target in np.linspace(0, num_steps, count, endpoint=False):
        out.append(min((s for s in avail if s not in out), key=lambda s: abs(s - target)))
    return sorted(out)


def mean_state(states: Sequence[Any]) -> Any:
    """The elementwise mean of model states of one structure: floating leaves averaged (in
    float32), any other leaf taken from the first state."""
    if not states:
        raise ValueError("no parameter states to average")

    def average(*xs):
        if all(x is xs[0] for x in xs):  # shared, e.g. the frozen blocks of a partial run
            return xs[0]
        first = np.asarray(xs[0])
        if not np.issubdtype(first.dtype, np.floating):
            return first
        return np.mean(np.stack([np.asarray(x, np.float32) for x in xs]), 0).astype(first.dtype)

    return jax.tree.map(average, *states)


def explicit_gradients(engine: GradientEngine, state: Any, tokens: Mapping) -> np.ndarray:
    """float32 [M, n]: every example's flattened loss gradient (an engine without
    factorisation or projection)."""
    chunks = engine.features(state, tokens)
    return np.concatenate([np.asarray(f["flat"], np.float32)[:n] for n, f in chunks])


def adam_scale(mean: np.ndarray, var: np.ndarray, batch_size: int, precondition: str) -> np.ndarray:
    """float32 [n]: 1 / (√v + ε), v = mean² + var / B, per parameter ("none": ones)."""
    if precondition not in config_lib.KERNEL_PRECONDITIONERS:
        known = " | ".join(config_lib.KERNEL_PRECONDITIONERS)
        raise ValueError(f"precondition must be {known}, got {precondition!r}")
    if precondition == "none":
        return np.ones(mean.shape, np.float32)
    second = np.square(mean) + var / batch_size
    return (1.0 / (np.sqrt(second) + ADAM_EPS)).astype(np.float32)


def kernel_at(pool: np.ndarray, test: np.ndarray, batch_size: int, precondition: str) -> np.ndarray:
    """float64 [P, N]: ⟨(g_i − ḡ) ⊘ (√v + ε), g_j⟩ for pool gradients ``pool`` [P, n] and test
    gradients ``test`` [N, n] at one parameter state (see the module docstring)."""
    mean = pool.mean(0, dtype=np.float64)
    centred = pool - mean.astype(np.float32)
    var = np.mean(np.square(centred, dtype=np.float64), 0)
    centred = centred * adam_scale(mean, var, batch_size, precondition)
    return centred.astype(np.float64) @ test.astype(np.float64).T


def streamed_kernel_at(
    engine: GradientEngine,
    state: Any,
    pool_tokens: Mapping[str, np.ndarray],
    test_tokens: Mapping[str, np.ndarray],
    batch_size: int,
    precondition: str,
) -> np.ndarray:
    """`kernel_at` holding only the test set's gradients: the pool's are computed chunk by
    chunk twice (its moments, then its rows of K), for models whose pool gradients do not
    fit in memory at once."""
    total = total_sq = 0.0
    count = 0
    for n, f in engine.features(state, pool_tokens):
        g = np.asarray(f["flat"], np.float64)[:n]
        total, total_sq, count = total + g.sum(0), total_sq + np.square(g).sum(0), count + n
    mean = total / count
    var = np.maximum(total_sq / count - np.square(mean), 0.0)
    scale = adam_scale(mean, var, batch_size, precondition)
    test = explicit_gradients(engine, state, test_tokens)
    rows = []
    for n, f in engine.features(state, pool_tokens):
        g = np.asarray(f["flat"], np.float32)[:n]
        rows.append(((g - mean.astype(np.float32)) * scale).astype(np.float64) @ test.T)
    return np.concatenate(rows)


def exact_grad_config(grad_config: GradConfig) -> GradConfig:
    """``grad_config`` made to give explicit gradients of every parameter."""
    return dataclasses.replace(grad_config, layers="all", factorize="none", projection_dim=0)


def path_kernel(
    cache_file: str | os.PathLike,
    graphdef: nnx.GraphDef,
    states: Mapping[int, Any],
    pool_tokens: Mapping[str, np.ndarray],
    test_tokens: Mapping[str, np.ndarray],
    grad_config: GradConfig,
    batch_size: int,
    precondition: str,
    first_layer: int = 0,
) -> np.ndarray:
    """float32 [P, N]: K averaged over ``states`` ({step: mean parameter state}), cached at
    ``<cache_file>.<hash>.npy``. ``first_layer`` > 0: gradients of a partially fine-tuned
    model's trained parameters only (blocks first_layer.. and the final norm)."""
    cfg = exact_grad_config(grad_config)
    steps = sorted(states)
    settings = {
        "encoder": "path_kernel",
        "precondition": precondition,
        "batch_size": int(batch_size),
        "eps": ADAM_EPS,
        "steps": steps,
        "grad": {"seed": cfg.seed},  # explicit gradients: the other settings only size work
        "pool": fingerprint(*(np.asarray(pool_tokens[k]) for k in sorted(pool_tokens))),
        "test": fingerprint(*(np.asarray(test_tokens[k]) for k in sorted(test_tokens))),
        "states": [fingerprint(*jax.tree.leaves(states[s])) for s in steps],
    }
    if first_layer:  # absent for full fine-tuning, so that earlier caches stay valid
        settings["first_layer"] = int(first_layer)
    target = cache_path(cache_file, features_key([], **settings))
    rows = len(pool_tokens["input_ids"])

    def compute() -> np.ndarray:
        engine = GradientEngine(graphdef, states[steps[0]], cfg, first_layer=first_layer)
        # Every state shares the frozen blocks (a partial run): their output is computed once.
        pool = engine.attach_residuals(states[steps[0]], pool_tokens)
        test = engine.attach_residuals(states[steps[0]], test_tokens)
        n_test = len(test_tokens["input_ids"])
        budget = cfg.memory_budget_mb * 2**20
        held = (rows + n_test) * engine.num_explicit * 4  # every gradient at once
        if n_test * engine.num_explicit * 4 > budget / 2:  # streaming holds the test side
            raise ValueError(
                f"the path kernel needs the exact gradients of the test examples in memory, "
                f"{n_test * engine.num_explicit * 4 / 2**20:.0f} MB, over half of "
                f"baselines.memory_budget_mb ({cfg.memory_budget_mb:.0f}); raise it, or set "
                "simulator.kernel_checkpoints = 1 and simulator.kernel_precondition = 'none' "
                "for projected gradients"
            )
        total = np.zeros((rows, n_test))
        for s in steps:
            if held <= budget:
                g_pool = explicit_gradients(engine, states[s], pool)
                g_test = explicit_gradients(engine, states[s], test)
                total += kernel_at(g_pool, g_test, batch_size, precondition)
            else:
                total += streamed_kernel_at(engine, states[s], pool, test, batch_size, precondition)
        return (total / len(steps)).astype(np.float32)

    return load_or_compute(target, rows, compute)


def path_states(
    params_at: Callable[[int, int], Any], runs: Sequence[int], steps: Sequence[int], base: Any
) -> dict[int, Any]:
    """{step: the mean of ``runs``' parameters after that step}; step 0 is ``base``."""
    return {
        int(s): base if s == 0 else mean_state([params_at(int(r), int(s)) for r in runs])
        for s in steps
    }


def kernel_features(kernel: np.ndarray) -> dict[str, np.ndarray]:
    """{"train": K / r, "test": I}, r the root mean square entry of K, so that
    ⟨train_i, test_j⟩ = K(i, j) / r, of order 1."""
    kernel = np.asarray(kernel, np.float64)
    scale = float(np.sqrt(np.mean(kernel**2)))
    if not scale > 0:
        raise ValueError("the path kernel is zero everywhere: the pool's gradients are all alike")
    train = (kernel / scale).astype(np.float32)
    return {"train": train, "test": np.eye(kernel.shape[1], dtype=np.float32)}


def path_kernel_features(
    config: Any, workdir: Workdir, prep: Prepared, train_runs: Sequence[int], num_steps: int
) -> dict[str, np.ndarray]:
    """The kernel features of the workdir's runs ({"train", "test", "label": what they are}):
    `path_kernel` along the mean path of
    ``train_runs`` (the simulators' training runs) at ``simulator.kernel_checkpoints`` steps
    that every one of them saved (fewer, said on stdout, when fewer are saved: with
    ``collect.save_params = "none"`` only the base model), preconditioned by
    ``simulator.kernel_precondition``."""
    sc = config.simulator
    params_at, saved_steps = params_reader(workdir.runs, prep.model)
    runs = [int(r) for r in train_runs]
    saved = set.intersection(*(set(saved_steps(r)) for r in runs)) if runs else {0}
    steps = path_steps(sorted(saved), num_steps, int(sc.kernel_checkpoints))
    if len(steps) < int(sc.kernel_checkpoints):
        print(
            f"gradient kernel: {len(steps)} of simulator.kernel_checkpoints = "
            f"{sc.kernel_checkpoints} steps have saved parameters in every training run "
            f"(steps {steps}; collect.save_params = {config.collect.save_params!r})",
            flush=True,
        )
    graphdef, base = nnx.split(prep.model)
    kernel = path_kernel(
        workdir.features_prefix,
        graphdef,
        path_states(params_at, runs, steps, base),
        prep.pool_tokens.loss_inputs(),
        prep.test_tokens.loss_inputs(),
        config_lib.grad_config(config.baselines),
        int(config.collect.batch_size),
        str(sc.kernel_precondition),
        config_lib.first_layer(config, prep.model),
    )
    label = (
        f"{'Adam-preconditioned' if sc.kernel_precondition == 'adam' else 'plain'} gradient "
        f"kernel averaged over steps {steps} of the training runs' mean path"
    )
    return kernel_features(kernel) | {"label": label}
