"""Length-bucketed evaluation: the bucket plan is the cheapest one, and the losses over trimmed
sequences equal those over the padded ones, in the original order."""

from __future__ import annotations

import dataclasses
import itertools

import jax
import numpy as np
import pytest

from gptjax.collect.length_buckets import (
    bucket_by_length,
    bucketed_losses,
    lengths_of,
    plan_buckets,
    trim_to_longest,
)
from gptjax.collect.train_step import eval_losses, example_losses
from gptjax.models.config import pythia_style
from gptjax.models.transformer import init_model
from gptjax.tasks.tokenize import round_up
from tests.test_collect_options import tokens


def brute_force_cost(lengths: np.ndarray, max_buckets: int, multiple: int) -> int:
    """Least evaluated positions over every cut of the sorted examples into <= max_buckets
    contiguous groups."""
    rounded = sorted(round_up(int(n), multiple) for n in lengths)
    n, best = len(rounded), None
    for k in range(1, max_buckets + 1):
        for cuts in itertools.combinations(range(1, n), k - 1):
            bounds = (0, *cuts, n)
            cost = sum((b - a) * rounded[b - 1] for a, b in itertools.pairwise(bounds))
            best = cost if best is None else min(best, cost)
    return best


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("max_buckets", [1, 2, 3])
def test_the_bucket_plan_covers_every_example_at_the_least_cost(seed, max_buckets):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 40, size=int(rng.integers(1, 9)))
    plan = plan_buckets(lengths, max_buckets, multiple=4)
    assert len(plan) <= max_buckets
    covered = np.sort(np.concatenate([idx for idx, _ in plan]))
    np.testing.assert_array_equal(covered, np.arange(len(lengths)))
    for idx, length in plan:
        assert length % 4 == 0 and lengths[idx].max() <= length
    cost = sum(len(idx) * length for idx, length in plan)
    assert cost == brute_force_cost(lengths, max_buckets, 4)


def test_lengths_are_one_past_the_last_attended_position():
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(lengths_of({"attention_mask": mask}), [2, 4, 3, 1])


@pytest.fixture(scope="module")
def model_and_tokens():
    cfg = dataclasses.replace(
        pythia_style(), vocab_size=61, hidden_size=32, num_layers=2, num_heads=4
    )
    cfg = dataclasses.replace(cfg, intermediate_size=64)
    from flax import nnx

    graphdef, params = nnx.split(init_model(cfg, seed=2))
    return graphdef, params, tokens(np.random.default_rng(5), 23)


@pytest.mark.parametrize("chunk", [1, 4, 64])
def test_bucketed_losses_equal_the_padded_evaluation_in_the_original_order(model_and_tokens, chunk):
    graphdef, params, test = model_and_tokens

    def losses_of(t):
        return example_losses(graphdef, params, t)

    padded = np.asarray(jax.jit(lambda t: eval_losses(losses_of, t, chunk))(test))
    buckets = bucket_by_length(test, max_buckets=3, multiple=2)
    assert len(buckets["buckets"]) > 1  # the test set's lengths vary: something is trimmed
    trimmed = np.asarray(jax.jit(lambda b: bucketed_losses(losses_of, b, chunk))(buckets))
    np.testing.assert_allclose(trimmed, padded, rtol=1e-5, atol=1e-6)


def test_trim_to_longest_keeps_every_attended_position(model_and_tokens):
    _, _, test = model_and_tokens
    cut = trim_to_longest(test, multiple=1)
    assert cut["input_ids"].shape[1] == lengths_of(test).max()
    np.testing.assert_array_equal(cut["attention_mask"].sum(1), test["attention_mask"].sum(1))
    np.testing.assert_array_equal(cut["target_pos"], test["target_pos"])
