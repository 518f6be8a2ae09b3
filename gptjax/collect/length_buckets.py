"""Evaluation over sequences trimmed to their length: exact, and about half the work on
real data.

Examples are right-padded and attention is causal, so nothing at a position depends on a
later one: cutting trailing padding changes none of an example's target losses. Collection
evaluates every test example after (nearly) every step, and with one padded length for all
of them most of that work is padding (SST-2's test prompts under SmolLM2's tokenizer: 30
tokens on average, padded to 64). Here the test set is split into at most ``MAX_BUCKETS``
groups of similar length, each trimmed to its own longest example (rounded up to
``PAD_MULTIPLE``), with the boundaries chosen to minimise the evaluated positions; losses are
computed bucket by bucket and put back in the original order. The number of buckets is
bounded because each one is a separately compiled evaluation inside the step block.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gptjax.collect.train_step import RESIDUAL, eval_losses
from gptjax.tasks.tokenize import round_up

PAD_MULTIPLE = 8  # trimmed lengths are multiples of this (fewer distinct shapes, aligned)
MAX_BUCKETS = 4
# Fields whose axis 1 is the position: trimmed. The target fields index positions and stay.
POSITION_FIELDS = ("input_ids", "attention_mask", RESIDUAL)

Bucketed = dict[str, Any]  # {"buckets": [tokens trimmed], "inverse": int32 [N]}


def lengths_of(tokens: dict[str, Any]) -> np.ndarray:
    """Each example's length: one past its last attended position (right padding)."""
    mask = np.asarray(tokens["attention_mask"]) > 0
    last = mask.shape[1] - np.argmax(mask[:, ::-1], axis=1)
    return np.where(mask.any(axis=1), last, 1).astype(np.int64)


def trim(tokens: dict[str, Any], length: int) -> dict[str, Any]:
    """``tokens`` with the position axis of the sequence fields cut to ``length``."""
    return {k: v[:, :length] if k in POSITION_FIELDS else v for k, v in tokens.items()}


def trim_to_longest(tokens: dict[str, Any], multiple: int = PAD_MULTIPLE) -> dict[str, Any]:
    """``tokens`` cut to their longest example (rounded up to ``multiple``): exact."""
    padded = np.asarray(tokens["attention_mask"]).shape[1]
    return trim(tokens, min(round_up(int(lengths_of(tokens).max(initial=1)), multiple), padded))


def plan_buckets(
    lengths: np.ndarray, max_buckets: int = MAX_BUCKETS, multiple: int = PAD_MULTIPLE
) -> list[tuple[np.ndarray, int]]:
    """(example indices, trimmed length) of each bucket: examples sorted by length, cut into
    at most ``max_buckets`` contiguous groups so that the sum over groups of (size x longest,
    rounded up to ``multiple``) is smallest (dynamic programming over the distinct rounded
    lengths, of which there are at most L / multiple)."""
    order = np.argsort(lengths, kind="stable")
    rounded = np.array([round_up(int(n), multiple) for n in lengths[order]])
    values, counts = np.unique(rounded, return_counts=True)
    m = len(values)
    before = np.concatenate([[0], np.cumsum(counts)])  # examples shorter than values[j]
    inf = float("inf")
    # best[k][j]: least cost of covering the first j distinct lengths with k buckets.
    best = np.full((max_buckets + 1, m + 1), inf)
    cut = np.zeros((max_buckets + 1, m + 1), int)
    best[0][0] = 0.0
    for k in range(1, max_buckets + 1):
        for j in range(1, m + 1):
            for i in range(j):  # the bucket holds distinct lengths i .. j-1
                cost = best[k - 1][i] + (before[j] - before[i]) * values[j - 1]
                if cost < best[k][j]:
                    best[k][j], cut[k][j] = cost, i
    k = int(np.argmin(best[:, m]))
    bounds, j = [], m
    while j > 0:
        i = cut[k][j]
        bounds.append((i, j))
        j, k = i, k - 1
    return [(order[before[i] : before[j]], int(values[j - 1])) for i, j in reversed(bounds)]


def bucket_by_length(
    tokens: dict[str, Any], max_buckets: int = MAX_BUCKETS, multiple: int = PAD_MULTIPLE
) -> Bucketed:
    """The evaluation set as length buckets (see the module docstring)."""
    padded = np.asarray(tokens["attention_mask"]).shape[1]
    plan = plan_buckets(lengths_of(tokens), max_buckets, multiple)
    buckets = [
        trim({k: v[np.asarray(idx)] for k, v in tokens.items()}, min(length, padded))
        for idx, length in plan
    ]
    order = np.concatenate([idx for idx, _ in plan])
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return {"buckets": buckets, "inverse": jnp.asarray(inverse, jnp.int32)}


def bucketed_losses(
    losses_of: Callable[[dict[str, jax.Array]], jax.Array], test: Bucketed, chunk: int
) -> jax.Array:
    """``losses_of(tokens) -> [B]`` over every example of ``test`` [N], in the original
    order. ``chunk`` examples of the untrimmed length bound the memory of one evaluation: a
    bucket of shorter examples takes proportionally more at a time."""
    buckets = test["buckets"]
    longest = max(b["attention_mask"].shape[1] for b in buckets)
    parts = []
    for bucket in buckets:
        n, length = bucket["attention_mask"].shape
        most = max(1, chunk * longest // length)
        even = -(-n // -(-n // most))  # as many chunks as `most` needs, padding the least
        parts.append(eval_losses(losses_of, bucket, even))
    return jnp.concatenate(parts)[test["inverse"]]
