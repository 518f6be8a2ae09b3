"""The shared recurrence and its jitted rollout.

Every simulator here reduces to one coefficient table ``table[j, i, n]`` (j = 0..n-1 the
per-example α_{j+1} factors, j = n the β factor) over pool example i and test example n:

    ŷ_t[n] = Σ_{j=1..order} α_j(c_t, n) · ŷ_{t-j}[n] + β(c_t, n)
    α_j(c_t, n) = reduce_{i ∈ c_t} table[j-1, i, n]
    β(c_t, n)   = reduce_{i ∈ c_t} table[order, i, n]

where ``reduce`` is a sum (the paper) or a mean over the batch (so that α, β do not scale with
the batch size, and runs with another batch size stay in distribution). The table is
computed once per parameter setting, so a rollout of
a whole test run is a gather-sum plus a few multiply-adds per step.

Conventions (fixed for the whole package):

* ``curricula[r, t-1]`` holds the pool ids of the batch of step t (t = 1..T); id ``-1`` is a
  padding slot that contributes nothing (used for variable batch sizes and for removing an
  example from a curriculum in counterfactual queries).
* ``y[r, t, n]`` is the metric after step t; ``y[r, 0]`` is before training.
* History before step 0 (needed by an order-n model at t < n) is padded with ``y_0``
  (``pad="first"``: before training the model did not change, so the metric *was* y_0), or
  with zeros (``pad="zero"``, what the reference code does). Consequently teacher-forced
  transitions run over every t = 1..T and a rollout starts at t = m from m ≥ 1 given values.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

PAD_MODES = ("first", "zero")
REDUCE_MODES = ("sum", "mean")


def reduce_batch(rows: jax.Array, mask: jax.Array, batch_reduce: str, axis: int) -> jax.Array:
    """Sum or mean over the batch axis of gathered per-example rows.

    ``mask`` (1 for a real example, 0 for a padding slot) must broadcast against ``rows``;
    padding slots were gathered from a valid row, the mask removes them.
    """
    mask = mask.astype(rows.dtype)
    total = jnp.sum(rows * mask, axis=axis)
    if batch_reduce == "sum":
        return total
    count = jnp.maximum(jnp.sum(jnp.broadcast_to(mask, rows.shape), axis=axis), 1.0)
    return total / count


def advance(hist: jax.Array, coefs: jax.Array, order: int) -> jax.Array:
    """One step of the recurrence. ``hist[..., j]`` = ŷ_{t-1-j}; ``coefs[..., :order]`` = α,
    ``coefs[..., order]`` = β. Returns ŷ_t."""
    return jnp.sum(coefs[..., :order] * hist, axis=-1) + coefs[..., order]


def push(hist: jax.Array, y: jax.Array) -> jax.Array:
    """Shift the history window: the newest value goes to position 0."""
    return jnp.concatenate([y[..., None], hist[..., :-1]], axis=-1)


def initial_history(y_given: jax.Array, order: int, pad: str) -> jax.Array:
    """History at the first simulated step from the ``m`` given values ``y_given[..., :m]``.

    Returns ``[..., order]`` with position 0 the newest (``y_{m-1}``) and positions before
    step 0 padded with y_0 or 0.
    """
    m = y_given.shape[-1]
    idx = m - 1 - np.arange(order)  # steps m-1, m-2, ..., m-order
    vals = y_given[..., np.clip(idx, 0, m - 1)]
    if pad == "zero":
        vals = jnp.where(jnp.asarray(idx >= 0), vals, 0.0)
    return vals


def scale_step(coefs: jax.Array, scale: jax.Array, order: int) -> jax.Array:
    """Scale a step's predicted *change* by ``scale`` (the step's learning rate relative to
    a reference): ŷ_t = ŷ_{t-1} + s·(Σ_j α_j ŷ_{t-j} + β − ŷ_{t-1}), written as new
    coefficients (α_1 → 1 + s(α_1 − 1), α_j → s·α_j, β → s·β). s = 1 is plain GPTfluence."""
    s = scale[..., None]
    out = coefs * s
    return out.at[..., 0].add(1.0 - scale)


def step_coefficients(table: jax.Array, curricula: jax.Array, batch_reduce: str) -> jax.Array:
    """[R, T, J, N] reduced coefficients of every step: the batch gather-sum written as one
    matrix product (counts [R·T, P] @ table [P, J·N]), which BLAS does far faster than
    R·T·B small gathers inside the scan."""
    n_pool = table.shape[1]
    r, t, _ = curricula.shape
    rows = jnp.arange(r * t).reshape(r, t, 1)
    # Scatter-add the batch into per-step counts (memory R·T·P; padding slots add 0).
    counts = (
        jnp.zeros((r * t, n_pool), table.dtype)
        .at[jnp.broadcast_to(rows, curricula.shape), jnp.maximum(curricula, 0)]
        .add((curricula >= 0).astype(table.dtype))
        .reshape(r, t, n_pool)
    )
    if batch_reduce == "mean":
        counts = counts / jnp.maximum((curricula >= 0).sum(-1, keepdims=True), 1)
    return jnp.einsum("rtp,jpn->rtjn", counts, table)


def _trajectory(
    coefs: jax.Array, y_given: jax.Array, scale: jax.Array, *, order: int, pad: str
) -> jax.Array:
    """Roll out one (run, test example) trajectory.

    coefs: [T, J] — reduced α_1..α_n, β of each step. y_given: [m] — the first m true
    values. scale: [T] — per-step change scale (see ``scale_step``).
    Returns [T + 1] with the m given values first.
    """
    m = y_given.shape[0]
    hist0 = initial_history(y_given, order, pad)

    def step(hist, inputs):
        c_t, s_t = inputs
        y = advance(hist, scale_step(c_t, s_t, order), order)
        return push(hist, y), y

    _, ys = jax.lax.scan(step, hist0, (coefs[m - 1 :], scale[m - 1 :]))
    return jnp.concatenate([y_given, ys])


@partial(jax.jit, static_argnames=("order", "batch_reduce", "pad"))
def rollout_table(
    table: jax.Array,
    curricula: jax.Array,
    y_given: jax.Array,
    *,
    order: int,
    batch_reduce: str = "sum",
    pad: str = "first",
    scale: jax.Array | None = None,
) -> jax.Array:
    """Autoregressive rollout of every (run, test example) trajectory.

    table: [order + 1, P, N]; curricula: int32 [R, T, B] (ids index the table's P axis, -1 =
    empty slot); y_given: [R, m, N], the first m ≥ 1 true values of each trajectory;
    scale: optional [R, T] per-step change scale (learning-rate conditioning).
    Returns [R, T + 1, N]: the given values, then the simulated steps m..T.

    The step coefficients come from one matrix product; the recurrence is a ``lax.scan``
    over steps, ``vmap``ped over test examples and runs.
    """
    if scale is None:
        scale = jnp.ones(curricula.shape[:2], table.dtype)
    coefs = step_coefficients(table, curricula, batch_reduce)  # [R, T, J, N]
    per_example = jax.vmap(
        partial(_trajectory, order=order, pad=pad), in_axes=(2, 1, None), out_axes=1
    )  # over test examples
    per_run = jax.vmap(per_example, in_axes=(0, 0, 0), out_axes=0)
    return per_run(coefs, y_given, scale)


def as_given(y_init: np.ndarray | jax.Array) -> jax.Array:
    """Accept ``y_init`` as [R, N] (just y_0) or [R, m, N]."""
    y_init = jnp.asarray(y_init, jnp.float32)
    if y_init.ndim == 2:
        y_init = y_init[:, None, :]
    if y_init.ndim != 3 or y_init.shape[1] < 1:
        raise ValueError(f"y_init must be [R, N] or [R, m, N] with m >= 1, got {y_init.shape}")
    return y_init


def compact_ids(curricula: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map the pool ids used by ``curricula`` onto 0..U-1.

    Returns (unique ids [U], remapped curricula) so that a table needs columns only for the
    examples that actually occur (padding -1 stays -1).
    """
    curricula = np.asarray(curricula)
    used = np.unique(curricula[curricula >= 0])
    if used.size == 0:
        used = np.zeros(1, dtype=curricula.dtype)
    remapped = np.where(curricula >= 0, np.searchsorted(used, np.maximum(curricula, 0)), -1)
    return used.astype(np.int32), remapped.astype(np.int32)
