"""Influence queries answered by a simulator's coefficient table.

Scores are *effects on the metric* (positive = the example raises it). For a loss, lower is
better, so a helpful example has a negative effect; pass ``higher_is_better=True`` for BLEU /
ROUGE-L.

* ``one_step_effects``: the change of ŷ that example i causes in one step, at a state where
  the history equals ``y_ref``, relative to a *null* example (one that keeps the metric
  where it is: α_1 share 1/B for a batch sum, 1 for a mean, nothing else):
      δ[i, n] = (Σ_j a_j[i, n] − a_null) · y_ref[n] + b[i, n]
  (divided by B for a batch mean). Cheap, curriculum-free.
* ``removal_effects``: the change of the simulated *final* value when example i is removed
  from a given curriculum (each occurrence replaced by the null example), averaged over the
  given runs — a counterfactual rollout per pool example.
* ``top_k``, ``mislabel_ranking``: rankings from either score.

All functions take a table ``[order+1, P, N]``; ``FittedSimulator.coef_table()`` gives one,
and a synthetic ground truth has one, so the same code scores both.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from .rollout import as_given, rollout_table


def null_share(batch_reduce: str, batch_size: int) -> float:
    """α_1 contribution of an example that leaves the metric unchanged."""
    return 1.0 / batch_size if batch_reduce == "sum" else 1.0


def one_step_effects(
    table: np.ndarray, y_ref: np.ndarray, *, order: int, batch_reduce: str, batch_size: int
) -> np.ndarray:
    """[P, N] one-step effect of each pool example on each test example at state ``y_ref``
    ([N]); see the module docstring."""
    table = np.asarray(table, np.float64)
    a = table[:order].sum(0) - null_share(batch_reduce, batch_size)
    eff = a * np.asarray(y_ref, np.float64)[None, :] + table[order]
    return eff / batch_size if batch_reduce == "mean" else eff


@partial(jax.jit, static_argnames=("order", "batch_reduce", "pad"))
def _removal(table_ext, curricula, y_given, candidates, scale, *, order, batch_reduce, pad):
    null_id = table_ext.shape[1] - 1
    base = rollout_table(
        table_ext, curricula, y_given, order=order, batch_reduce=batch_reduce, pad=pad, scale=scale
    )[:, -1]  # [R, N]

    def one(i):
        cf = jnp.where(curricula == i, null_id, curricula)
        final = rollout_table(
            table_ext, cf, y_given, order=order, batch_reduce=batch_reduce, pad=pad, scale=scale
        )[:, -1]
        return jnp.mean(final - base, axis=0)  # [N]

    return jax.lax.map(one, candidates)  # sequential over examples: bounded memory


def removal_effects(
    table: np.ndarray,
    curricula: np.ndarray,
    y_init: np.ndarray,
    *,
    order: int,
    batch_reduce: str,
    pad: str = "first",
    candidates: np.ndarray | None = None,
    scale: np.ndarray | None = None,
) -> np.ndarray:
    """[len(candidates), N]: mean over the runs of ŷ_T(without i) − ŷ_T(with i) — *minus*
    that, i.e. the effect of *including* i, so that signs agree with ``one_step_effects``.

    ``curricula`` [R, T, B] index the table's P axis; ``candidates`` default to every pool
    example (an example absent from every run has effect 0); ``scale`` [R, T] is the
    per-step change scale of a learning-rate-conditioned simulator.
    """
    table = jnp.asarray(table, jnp.float32)
    j, _, n = table.shape
    bsz = np.asarray(curricula).shape[2]
    null = jnp.zeros((j, 1, n), jnp.float32).at[0].set(null_share(batch_reduce, bsz))
    table_ext = jnp.concatenate([table, null], axis=1)
    if candidates is None:
        candidates = np.arange(table.shape[1])
    out = _removal(
        table_ext,
        jnp.asarray(curricula, jnp.int32),
        as_given(y_init),
        jnp.asarray(candidates, jnp.int32),
        None if scale is None else jnp.asarray(scale, jnp.float32),
        order=order,
        batch_reduce=batch_reduce,
        pad=pad,
    )
    return -np.asarray(out)


def fitted_effects(
    fitted,
    kind: str = "one_step",
    *,
    y_ref: np.ndarray | None = None,
    curricula: np.ndarray | None = None,
    y_init: np.ndarray | None = None,
    test_ids=None,
    lr: np.ndarray | None = None,
) -> np.ndarray:
    """Scores [P, N] from a ``FittedSimulator`` (``kind`` "one_step" needs ``y_ref``;
    "removal" needs ``curricula`` and ``y_init``)."""
    table = fitted.coef_table(test_ids)
    cfg = fitted.config
    ids = np.arange(table.shape[2]) if test_ids is None else np.asarray(test_ids)
    # An anchored simulator's recurrence runs on deviations from the mean trajectory.
    anchor = None if fitted.anchor_traj is None else fitted.anchor_traj[:, ids]
    if kind == "one_step":
        if y_ref is None:
            raise ValueError("one_step effects need y_ref [N]")
        y_ref = np.asarray(y_ref) - (0.0 if anchor is None else anchor.mean(0))
        return one_step_effects(
            table,
            y_ref,
            order=fitted.order,
            batch_reduce=cfg.batch_reduce,
            batch_size=fitted.batch_size,
        )
    if kind == "removal":
        if curricula is None or y_init is None:
            raise ValueError("removal effects need curricula and y_init")
        c = np.asarray(curricula)
        y_init = np.asarray(y_init)
        if anchor is not None:
            y_init = y_init - (anchor[0] if y_init.ndim == 2 else anchor[: y_init.shape[1]])
        return removal_effects(
            table,
            c,
            y_init,
            order=fitted.order,
            batch_reduce=cfg.batch_reduce,
            pad=cfg.pad,
            scale=fitted.step_scale(lr, c.shape[0], c.shape[1]),
        )
    raise ValueError(f"kind must be 'one_step' or 'removal', got {kind!r}")


def counterfactual(
    fitted, curricula: np.ndarray, y_init: np.ndarray, test_ids=None, lr: np.ndarray | None = None
) -> np.ndarray:
    """Simulated trajectories [R, T+1, N] under any curriculum (e.g. with examples removed
    (-1), replaced, reordered or unseen)."""
    return fitted.rollout(curricula, y_init, test_ids, lr=lr)


def _helpfulness(scores: np.ndarray, higher_is_better: bool) -> np.ndarray:
    return np.asarray(scores) if higher_is_better else -np.asarray(scores)


def top_k(
    scores: np.ndarray, test_id: int, k: int = 10, higher_is_better: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(most helpful, most harmful) pool ids for one test example, best first."""
    h = _helpfulness(scores, higher_is_better)[:, test_id]
    order = np.argsort(-h, kind="stable")
    return order[:k], order[::-1][:k]


def mislabel_ranking(scores: np.ndarray, higher_is_better: bool = False) -> np.ndarray:
    """Pool ids ranked by summed *harmful* influence over the test examples (most suspicious
    first): Σ_n max(0, −helpfulness[i, n])."""
    harm = np.maximum(-_helpfulness(scores, higher_is_better), 0.0).sum(1)
    return np.argsort(-harm, kind="stable")
