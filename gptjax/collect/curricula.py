"""Which pool examples each run trains on, and in which order.

Run k's subset and order come from ``numpy.random.default_rng([seed, k, purpose])`` only, so
a run's curriculum does not depend on how many runs there are, on devices or on processes.
"""

from __future__ import annotations

import numpy as np

_SUBSET, _ORDER = 1, 2


def steps_per_run(subset_size: int, batch_size: int, epochs: int) -> int:
    """T: each epoch is the subset reshuffled, cut into full batches (a remainder is dropped)."""
    per_epoch = subset_size // batch_size
    if per_epoch == 0:
        raise ValueError(f"subset_size {subset_size} is smaller than batch_size {batch_size}")
    return per_epoch * epochs


def draw_curriculum(
    seed: int,
    run: int,
    *,
    candidates: np.ndarray,
    subset_size: int,
    batch_size: int,
    epochs: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(subset [S] sorted pool ids, curriculum [T, B] pool ids) of one run."""
    if subset_size > len(candidates):
        raise ValueError(
            f"subset_size {subset_size} exceeds the {len(candidates)} pool examples to draw from"
        )
    subset_rng = np.random.default_rng([seed, run, _SUBSET])
    subset = np.sort(subset_rng.choice(candidates, size=subset_size, replace=False))
    order_rng = np.random.default_rng([seed, run, _ORDER])
    per_epoch = subset_size // batch_size
    batches = [
        order_rng.permutation(subset)[: per_epoch * batch_size].reshape(per_epoch, batch_size)
        for _ in range(epochs)
    ]
    return subset.astype(np.int32), np.concatenate(batches).astype(np.int32)
