"""Per-example gradient inner products: every route (explicit vmap-grad, factorised dense and
vocabulary layers, random projection, chunking) against plain ``vmap(grad(per_example_loss))``;
checkpoint schedules and the trajectory recurrence."""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

from baselines.grads import (
    GradConfig,
    GradientEngine,
    as_batch,
)
from baselines.tracin import checkpoint_schedule, checkpoint_weights, simulate_run
from gptjax.models.config import ModelConfig, pythia_style
from gptjax.models.transformer import init_model
from tests.reference.explicit_grads import explicit_gradients, flat_dot

VOCAB = 37


def token_batch(rng, m, length=9, targets=3):
    ids = rng.integers(0, VOCAB, (m, length)).astype(np.int32)
    ids[0, :4] = ids[0, 4]  # repeated tokens: the factorised embedding sums their rows
    lens = rng.integers(targets + 2, length + 1, m)
    mask = (np.arange(length)[None] < lens[:, None]).astype(np.int32)
    pos = np.stack([np.arange(n - targets - 1, n - 1) for n in lens]).astype(np.int32)
    tmask = np.ones((m, targets), np.float32)
    tmask[-1, 0] = 0.0
    return dict(
        input_ids=ids,
        attention_mask=mask,
        target_pos=pos,
        target_ids=np.take_along_axis(ids, pos + 1, 1),
        target_mask=tmask,
    )


def models():
    neox = pythia_style(vocab_size=VOCAB, hidden_size=16, num_layers=1, num_heads=2)
    llama = ModelConfig(
        arch="llama",
        vocab_size=VOCAB,
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        num_kv_heads=1,
        intermediate_size=24,
        tie_embeddings=True,
    )
    return {"neox_untied": neox, "llama_tied": llama}


@pytest.fixture(scope="module", params=list(models()))
def case(request):
    graphdef, state = nnx.split(init_model(models()[request.param], 0))
    rng = np.random.default_rng(0)
    train, test = token_batch(rng, 5), token_batch(rng, 3)
    both = {k: np.concatenate([train[k], test[k]]) for k in train}
    ref = {}
    for last in (False, True):
        gram = flat_dot(*(explicit_gradients(graphdef, state, both, last_layer=last),) * 2)
        ref[last] = (gram[:5, 5:], np.diag(gram)[:5], np.diag(gram)[5:])
    return dict(name=request.param, graphdef=graphdef, state=state, train=train, test=test, ref=ref)


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


# The default route (vocab) on GPT-NeoX is also checked against Captum and by the stage tests.
ROUTES = {
    "neox_untied": [("all", "all"), ("last", "none")],
    "llama_tied": [("all", "vocab"), ("all", "all"), ("last", "vocab")],
}


@pytest.mark.parametrize("layers,factorize", sorted({r for rs in ROUTES.values() for r in rs}))
def test_engine_equals_vmap_grad(case, layers, factorize):
    if (layers, factorize) not in ROUTES[case["name"]]:
        pytest.skip("route covered on the other model")
    engine = GradientEngine(
        case["graphdef"],
        case["state"],
        GradConfig(layers=layers, factorize=factorize, chunk_size=2),
    )
    scores = engine.scores(case["state"], case["train"], case["test"])
    ref, ref_self, _ = case["ref"][layers == "last"]
    assert scores.shape == (5, 3)
    assert rel(scores, ref) < 1e-5
    assert rel(engine.self_scores(case["state"], case["train"]), ref_self) < 1e-5


def test_engine_excludes_parameters(case):
    """The plan really differentiates what it says: explicit leaves + factorised layers cover
    every parameter exactly once (all), or the unembedding alone (last)."""
    e_all = GradientEngine(case["graphdef"], case["state"], GradConfig(factorize="all"))
    e_last = GradientEngine(case["graphdef"], case["state"], GradConfig(layers="last"))
    tied = case["name"] == "llama_tied"
    n_params = sum(int(np.prod(s)) for s in e_all.shapes)
    vocab = VOCAB * 16 * (1 if tied else 2)
    dense = sum(a * b for a, b in e_all.plan.dense_shapes)
    assert e_all.num_explicit == n_params - vocab - dense
    assert e_all.plan.embed_tap and e_all.plan.head_tap and len(e_all.plan.dense) > 0
    assert e_last.num_explicit == 0 and e_last.plan.head_tap and not e_last.plan.embed_tap
    assert e_last.plan.embed_stop == tied


def test_projection_routes_agree_and_are_unbiased(case):
    """The factorised route projects exactly like the explicit one (same matrices), and the
    projected inner products average to the exact ones over projection seeds."""
    g, s = case["graphdef"], case["state"]
    d = 1024
    pe = GradientEngine(g, s, GradConfig(factorize="none", projection_dim=d)).scores(
        s, case["train"], case["test"]
    )
    pf = GradientEngine(g, s, GradConfig(factorize="all", projection_dim=d)).scores(
        s, case["train"], case["test"]
    )
    assert rel(pf, pe) < 1e-5
    ref, ref_self, ref_self_test = case["ref"][False]
    seeds = 8
    mean, mean_self = 0.0, 0.0
    for seed in range(seeds):
        e = GradientEngine(g, s, GradConfig(factorize="all", projection_dim=d, seed=seed))
        mean = mean + e.scores(s, case["train"], case["test"]) / seeds
        mean_self = mean_self + e.self_scores(s, case["train"]) / seeds
        if seed == 0:
            assert not np.allclose(e.scores(s, case["train"], case["test"]), ref, rtol=1e-3)
    # Per seed the relative std of a squared norm is about sqrt(8/d) = 0.09; 8 seeds: 0.03.
    assert np.abs(mean_self / ref_self - 1).max() < 0.12
    norms = np.sqrt(np.outer(ref_self, ref_self_test))
    assert (np.abs(mean - ref) / norms).max() < 0.12


def test_memory_budget_chunking():
    """Tiny budgets force one-example chunks and several held test groups: same scores."""
    graphdef, state = nnx.split(init_model(models()["neox_untied"], 1))
    rng = np.random.default_rng(3)
    train, test = token_batch(rng, 5), token_batch(rng, 3)
    big = GradientEngine(graphdef, state, GradConfig(factorize="all", chunk_size=2))
    small = GradientEngine(graphdef, state, GradConfig(factorize="all", memory_budget_mb=0.01))
    auto = GradientEngine(graphdef, state, GradConfig(factorize="all"))
    assert small.chunk_size(9, 3) == 1 and auto.chunk_size(9, 3) > 5
    assert auto.chunk_size(9, 3, 5) == 8 and auto.chunk_size(9, 3, 3) == 4
    np.testing.assert_allclose(
        small.scores(state, train, test), big.scores(state, train, test), rtol=1e-5, atol=1e-6
    )


def test_recorder_sees_every_compiled_call():
    """A recorder observes each jitted call (replayable from what it gets) and only inside
    ``recording``; it changes no score."""
    graphdef, state = nnx.split(init_model(models()["neox_untied"], 1))
    rng = np.random.default_rng(4)
    train, test = token_batch(rng, 5), token_batch(rng, 3)
    engine = GradientEngine(graphdef, state, GradConfig(chunk_size=2))
    plain = engine.scores(state, train, test)
    calls = []
    with engine.recording(lambda name, fn, args: calls.append((name, fn, args))):
        recorded = engine.scores(state, train, test)
    assert engine.recorder is None
    np.testing.assert_array_equal(recorded, plain)
    # 2 test chunks held, 3 training chunks streamed, a pair per (training, test) chunk.
    names = [name for name, _, _ in calls]
    assert names.count("features") == 2 + 3 and names.count("pair") == 3 * 2
    # The last call pairs the last training chunk (example 4 + padding) with the last test
    # chunk (example 2 + padding): replayed, it gives that block of the scores.
    name, fn, args = calls[-1]
    assert name == "pair"
    np.testing.assert_array_equal(np.asarray(fn(*args))[:1, :1], plain[4:, 2:])
    assert fn.trace(*args).lower().compile().cost_analysis() is not None
    seen = []
    engine.recorder = lambda name, fn, args: seen.append(name)
    engine.self_scores(state, test)
    assert seen == ["features", "features", "self", "self"]
    assert engine.recorder is not None
    engine.recorder = None
    engine.scores(state, train, test)
    assert len(seen) == 4


def test_config_and_batch_validation():
    with pytest.raises(ValueError, match="factorize"):
        GradConfig(factorize="some")
    with pytest.raises(ValueError, match="layers"):
        GradConfig(layers="first")
    batch = token_batch(np.random.default_rng(0), 2)
    with pytest.raises(ValueError, match="target_mask"):
        as_batch({k: v for k, v in batch.items() if k != "target_mask"})
    bad = dict(batch, target_pos=batch["target_pos"] + 100)
    with pytest.raises(ValueError, match="target_pos"):
        as_batch(bad)


def test_checkpoint_schedules():
    saved = list(range(0, 7))  # steps 0..6 saved; T = 6
    np.testing.assert_array_equal(checkpoint_schedule(saved, 6, "all"), [0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(checkpoint_schedule(saved, 6, "final"), [6] * 6)
    # k=3 evenly spaced among the steps usable for t-1 in 0..5: 0, 2 (or 3), 5
    np.testing.assert_array_equal(checkpoint_schedule(saved, 6, "k", 3), [0, 0, 2, 2, 2, 5])
    np.testing.assert_array_equal(checkpoint_schedule(saved, 6, "k", 1), [0] * 6)
    # sparse saves: the latest at or before t-1
    np.testing.assert_array_equal(checkpoint_schedule([0, 3, 6], 6, "all"), [0, 0, 0, 3, 3, 3])
    sched = checkpoint_schedule([0, 3, 6], 6, "all")
    assert checkpoint_weights(sched, np.full(6, 0.5)) == {0: 1.5, 3: 1.5}
    with pytest.raises(ValueError):
        checkpoint_schedule([], 6, "all")


def test_simulate_run_recurrence():
    """ŷ_t = ŷ_{t-1} − η_t mean_{i∈c_t} S_c[i, n], per test example, from a fake scorer; padded
    ids are skipped; nothing leaks between test examples."""
    rng = np.random.default_rng(0)
    pool, n, steps = 8, 3, 5
    table = {c: rng.normal(size=(pool, n)) for c in range(steps + 1)}
    calls = []

    def scores_at(step, ids):
        calls.append((step, tuple(ids)))
        return table[step][ids]

    curriculum = rng.integers(0, pool, (steps, 2))
    curriculum[2, 1] = -1  # padding
    lr = rng.uniform(0.1, 1.0, steps)
    y0 = rng.normal(size=(1, n))
    sched = checkpoint_schedule(range(steps + 1), steps, "all")
    pred = simulate_run(scores_at, sched, curriculum, lr, y0)
    expected = [y0[0]]
    for t in range(1, steps + 1):
        ids = [i for i in curriculum[t - 1] if i >= 0]
        expected.append(expected[-1] - lr[t - 1] * table[t - 1][ids].mean(0))
    np.testing.assert_allclose(pred, np.stack(expected), rtol=1e-12)
    assert all(list(ids) == sorted(set(ids)) for _, ids in calls)  # each id scored once
    # One test example's trajectory does not depend on the others.
    solo = simulate_run(lambda c, ids: table[c][ids][:, 1:2], sched, curriculum, lr, y0[:, 1:2])
    np.testing.assert_allclose(solo[:, 0], pred[:, 1], rtol=1e-12)
    # start=2: the first two values are given, the recurrence runs from y_1.
    given = rng.normal(size=(2, n))
    pred2 = simulate_run(scores_at, sched, curriculum, lr, given, start=2)
    np.testing.assert_allclose(pred2[:2], given)
    np.testing.assert_allclose(pred2[2:] - given[1], pred[2:] - pred[1], rtol=1e-10, atol=1e-12)
