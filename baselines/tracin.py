"""TracIn-CP and Grad-Dot: influence scores, self-influence, and simulated loss trajectories.

TracIn-CP trajectory of one run (curriculum c_1..c_T, learning rates η_1..η_T) for one test
example z′, starting from its true loss before training:

    ŷ_t = ŷ_{t−1} − η_t · (1/B) Σ_{i∈c_t} ⟨∇ℓ(z_i; θ_c), ∇ℓ(z′; θ_c)⟩

θ_c is the latest checkpoint at or before step t−1 among those used ("all": every saved step;
"k": k evenly spaced saved steps; "final": the last saved parameters only, i.e. Grad-Dot).
Each (run, test example) trajectory is its own recurrence: nothing is carried from one test
example to another, and nothing is fitted to the true trajectories.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from baselines.grads import Batch, GradientEngine, as_batch, take

SCHEDULES = ("all", "k", "final")


def checkpoint_schedule(saved: Sequence[int], num_steps: int, mode: str, k: int = 10) -> np.ndarray:
    """For steps t = 1..T (index t−1), the saved step whose parameters stand in for θ_{t−1}.

    all: the latest saved step ≤ t−1. k: the same among k evenly spaced saved steps ≤ T−1
    (the first saved step always included). final: the last saved step, for every t.
    A step earlier than every chosen checkpoint uses the earliest one.
    """
    if mode not in SCHEDULES:
        raise ValueError(f"checkpoint schedule must be one of {SCHEDULES}, got {mode!r}")
    saved = np.unique(np.asarray(list(saved), dtype=np.int64))
    if saved.size == 0:
        raise ValueError("no saved checkpoints")
    if mode == "final":
        return np.full(num_steps, saved[-1], dtype=np.int64)
    usable = saved[saved <= num_steps - 1]
    if usable.size == 0:
        usable = saved[:1]
    if mode == "k":
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        pick = np.unique(np.round(np.linspace(0, usable.size - 1, min(k, usable.size))))
        usable = usable[pick.astype(np.int64)]
    prev = np.arange(num_steps)  # t − 1 for t = 1..T
    idx = np.searchsorted(usable, prev, side="right") - 1
    return usable[np.maximum(idx, 0)]


def tracin_scores(
    engine: GradientEngine,
    states: Sequence[Any],
    learning_rates: Sequence[float],
    train: Any,
    test: Any,
) -> np.ndarray:
    """[M, N] TracIn-CP scores Σ_c η_c ⟨∇ℓ(train_i; θ_c), ∇ℓ(test_n; θ_c)⟩ (Captum's
    ``TracInCP.influence`` returns the transpose)."""
    if len(states) != len(learning_rates):
        raise ValueError(f"{len(states)} checkpoints but {len(learning_rates)} learning rates")
    if not states:
        raise ValueError("TracIn-CP needs at least one checkpoint")
    # A partial run's checkpoints share the frozen blocks: their output is computed once.
    train = engine.attach_residuals(states[0], train)
    test = engine.attach_residuals(states[0], test)
    total = np.zeros((train["input_ids"].shape[0], test["input_ids"].shape[0]), np.float64)
    for state, lr in zip(states, learning_rates, strict=True):
        total += float(lr) * engine.scores(state, train, test)
    return total


def self_influence(
    engine: GradientEngine,
    states: Sequence[Any],
    learning_rates: Sequence[float],
    examples: Any,
) -> np.ndarray:
    """[M] self-influence Σ_c η_c ‖∇ℓ(z_i; θ_c)‖² (high: hard or mislabelled examples)."""
    if len(states) != len(learning_rates):
        raise ValueError(f"{len(states)} checkpoints but {len(learning_rates)} learning rates")
    if not states:
        raise ValueError("self-influence needs at least one checkpoint")
    examples = engine.attach_residuals(states[0], examples)  # once: see tracin_scores
    total = np.zeros((examples["input_ids"].shape[0],), np.float64)
    for state, lr in zip(states, learning_rates, strict=True):
        total += float(lr) * engine.self_scores(state, examples)
    return total


def checkpoint_weights(schedule: np.ndarray, lr: np.ndarray) -> dict[int, float]:
    """Σ of η_t over the steps each checkpoint stands in for: the weight of θ_c in a
    checkpoint sum such as self-influence over one run."""
    out: dict[int, float] = {}
    for c, eta in zip(schedule.tolist(), np.asarray(lr, np.float64).tolist(), strict=True):
        out[int(c)] = out.get(int(c), 0.0) + eta
    return out


ScoresAt = Callable[[int, np.ndarray], np.ndarray]


def engine_scorer(
    engine: GradientEngine, params_at: Callable[[int], Any], train: Batch, test: Batch
) -> ScoresAt:
    """scores_at(step, ids) -> [len(ids), N] gradient inner products at the parameters saved
    after ``step``, between pool examples ``ids`` and every test example. Rows already
    computed for a step are reused (the all-steps and k-checkpoint schedules share steps)."""
    cache: dict[int, dict[int, np.ndarray]] = {}

    def scores_at(step: int, ids: np.ndarray) -> np.ndarray:
        rows = cache.setdefault(int(step), {})
        missing = np.array([i for i in np.unique(ids) if int(i) not in rows], dtype=np.int64)
        if missing.size:
            new = engine.scores(params_at(int(step)), take(train, missing), test)
            rows.update({int(i): r for i, r in zip(missing, new, strict=True)})
        return np.stack([rows[int(i)] for i in ids])

    return scores_at


def simulate_run(
    scores_at: ScoresAt,
    schedule: np.ndarray,
    curriculum: np.ndarray,
    lr: np.ndarray,
    y_given: np.ndarray,
    start: int = 1,
) -> np.ndarray:
    """Simulated loss trajectory [T+1, N] of one run.

    scores_at(step, ids) -> [len(ids), N] inner products at the parameters saved after
    ``step`` (see :func:`engine_scorer`); schedule [T] from :func:`checkpoint_schedule`;
    curriculum [T, B] pool ids (negative ids are padding, skipped: the batch mean is over the
    real ones); lr [T]; y_given [start, N] the true values at steps 0..start−1, which the
    simulation starts from. Gradients are needed only for the examples each checkpoint's
    steps use.
    """
    curriculum = np.asarray(curriculum)
    lr = np.asarray(lr, np.float64)
    num_steps = curriculum.shape[0]
    if schedule.shape != (num_steps,) or lr.shape != (num_steps,):
        raise ValueError(
            f"schedule {schedule.shape} and lr {lr.shape} must both be [T] with T={num_steps}"
        )
    y_given = np.asarray(y_given, np.float64)
    if y_given.ndim != 2 or y_given.shape[0] != start or not 1 <= start <= num_steps:
        raise ValueError(f"y_given must be [start={start}, N] with start in 1..T")
    n = y_given.shape[1]
    delta = np.zeros((num_steps, n), np.float64)
    steps = np.arange(start, num_steps + 1)  # simulated steps t (1-based)
    for c in np.unique(schedule[steps - 1]):
        ts = steps[schedule[steps - 1] == c]
        used = curriculum[ts - 1]
        ids = np.unique(used[used >= 0])
        if ids.size == 0:
            continue
        scores = np.asarray(scores_at(int(c), ids), np.float64)
        row_of = {int(i): r for r, i in enumerate(ids)}
        for t in ts:
            rows = [row_of[int(i)] for i in curriculum[t - 1] if i >= 0]
            if rows:
                delta[t - 1] = -lr[t - 1] * scores[rows].mean(0)
    pred = np.zeros((num_steps + 1, n), np.float64)
    pred[:start] = y_given
    pred[start:] = y_given[-1] + np.cumsum(delta[start - 1 :], axis=0)
    return pred


def simulate_from_dots(
    dots: np.ndarray, lr: np.ndarray, y_given: np.ndarray, start: int = 1
) -> np.ndarray:
    """TracIn-CP ("all": every step's own parameters) trajectory [T+1, N] of one run from the
    inner products recorded during collection (``collect.tracin_dots``): dots [T, N] holds
    ⟨∇ mean batch loss, ∇ℓ_n⟩ at θ_{t−1}, so the recurrence needs no checkpoint and no
    gradient here. Same recurrence and arguments as `simulate_run`."""
    dots = np.asarray(dots, np.float64)
    lr = np.asarray(lr, np.float64)
    y_given = np.asarray(y_given, np.float64)
    num_steps = dots.shape[0]
    if lr.shape != (num_steps,) or y_given.shape != (start, dots.shape[1]):
        raise ValueError(f"dots {dots.shape}, lr {lr.shape}, y_given {y_given.shape} disagree")
    delta = -lr[:, None] * dots
    pred = np.zeros((num_steps + 1, dots.shape[1]), np.float64)
    pred[:start] = y_given
    pred[start:] = y_given[-1] + np.cumsum(delta[start - 1 :], axis=0)
    return pred


def simulate_runs(
    engine: GradientEngine,
    runs: Sequence[int],
    *,
    params_at: Callable[[int, int], Any],
    saved_steps: Callable[[int], Sequence[int]],
    curricula: np.ndarray,
    lr: np.ndarray,
    y: np.ndarray,
    train_tokens: Any,
    test_tokens: Any,
    mode: str,
    k: int = 10,
    start: int = 1,
    scorers: dict[int, ScoresAt] | None = None,
) -> np.ndarray:
    """[R, T+1, N] simulated trajectories for the listed runs, each run and each test example
    rolled out on its own. ``y`` [K, T+1, N] supplies only the given values y[:, :start].
    ``scorers`` (run -> scores_at), if given, is filled and reused across calls."""
    train_tokens, test_tokens = as_batch(train_tokens), as_batch(test_tokens)
    scorers = {} if scorers is None else scorers
    out = []
    for run in runs:
        if run not in scorers:
            scorers[run] = engine_scorer(
                engine, lambda step, run=run: params_at(run, step), train_tokens, test_tokens
            )
        schedule = checkpoint_schedule(saved_steps(run), curricula.shape[1], mode, k)
        out.append(
            simulate_run(
                scorers[run], schedule, curricula[run], lr[run], y[run, :start], start=start
            )
        )
    return np.stack(out) if out else np.zeros((0,) + tuple(y.shape[1:]))
