"""KV-cached, batched, jitted generation equals token-by-token full recomputation."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gptjax.models.config import ModelConfig, pythia_style
from gptjax.models.generate import (
    generate,
    generate_runs,
    generate_text,
    next_tokens,
    pad_prompts,
    step_keys,
    trace_count,
)
from gptjax.models.transformer import Transformer, init_model

VOCAB = 61
CONFIGS = {
    "llama_gqa": ModelConfig(
        arch="llama",
        vocab_size=VOCAB,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=64,
        rope_theta=500.0,
        tie_embeddings=True,
    ),
    "neox_rot25": pythia_style(vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=4),
}
PROMPTS = [[5, 17, 3, 44, 9], [12, 7], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]]


@functools.cache
def _model(name: str) -> Transformer:
    """A random model whose next-token choices are far from flat: weights at std 0.02 give
    near-uniform logits that repeat one token, which would hide cache and position bugs."""
    model = init_model(CONFIGS[name], seed=3)
    graphdef, state = nnx.split(model)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(7), len(leaves))
    leaves = [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    return nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))


@functools.partial(jax.jit, static_argnames=("graphdef", "sample"))
def _next_token(state, ids, n, key, row, step, temperature, top_p, *, graphdef, sample):
    """The token after the first n of ids [1, W], by a full forward pass without cache.

    The buffer has a fixed width so this compiles once; tokens past n are right padding that
    causal attention keeps out of position n - 1."""
    model = nnx.merge(graphdef, state)
    hidden, _ = model(ids)
    logits = model.unembed(jax.lax.dynamic_slice_in_dim(hidden, n - 1, 1, axis=1)[:, 0])
    keys = step_keys(key, step, row[None]) if sample else None
    return next_tokens(logits, keys, temperature, top_p)[0]


def _recompute(model, prompt, row, max_new, eos=(), key=None, temperature=1.0, top_p=1.0):
    """Reference: no cache and no left padding; the whole sequence is re-run for every token."""
    graphdef, state = nnx.split(model)
    seq, new = list(prompt), []
    for step in range(max_new):
        ids = np.zeros((1, 32), np.int32)
        ids[0, : len(seq)] = seq
        tok = _next_token(
            state,
            jnp.asarray(ids),
            len(seq),
            jax.random.key(0) if key is None else key,
            jnp.int32(row),
            step,
            temperature,
            top_p,
            graphdef=graphdef,
            sample=key is not None,
        )
        new.append(int(tok))
        seq.append(int(tok))
        if new[-1] in eos:
            break
    return new


@pytest.mark.parametrize("name", list(CONFIGS))
def test_greedy_cache_equals_recomputation(name):
    model = _model(name)
    out = generate(model, PROMPTS, 8, bucket=16)
    expected = [_recompute(model, p, r, 8) for r, p in enumerate(PROMPTS)]
    assert out.as_lists() == expected
    # The models are not degenerate: rows differ and continue with more than one token.
    assert len({tuple(e) for e in expected}) == len(PROMPTS)
    assert all(len(set(e)) > 2 for e in expected)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_sampling_cache_equals_recomputation_with_same_key(name):
    model = _model(name)
    key = jax.random.key(42)
    out = generate(model, PROMPTS, 8, temperature=0.9, top_p=0.8, key=key, bucket=16)
    expected = [
        _recompute(model, p, r, 8, key=key, temperature=0.9, top_p=0.8)
        for r, p in enumerate(PROMPTS)
    ]
    assert out.as_lists() == expected
    greedy = generate(model, PROMPTS, 8, bucket=16).as_lists()
    assert out.as_lists() != greedy  # sampling really sampled
    # Another key draws another continuation; the same key, the same one.
    other = generate(model, PROMPTS, 8, temperature=0.9, key=jax.random.key(5), bucket=16)
    assert other.as_lists() != out.as_lists()
    again = generate(model, PROMPTS, 8, temperature=0.9, top_p=0.8, key=key, bucket=16)
    assert again.as_lists() == out.as_lists()


def test_stops_at_eos_per_row():
    model = _model("llama_gqa")
    free = generate(model, PROMPTS, 8, bucket=16).as_lists()
    eos = free[0][3]  # row 0 emits this token at step 3
    out = generate(model, PROMPTS, 8, eos_id=eos, pad_id=0, bucket=16)
    for r, row in enumerate(free):
        n = row.index(eos) + 1 if eos in row else 8
        assert out.lengths[r] == n
        assert out.as_lists()[r] == row[:n]
        assert (out.tokens[r, n:] == 0).all()  # padded after the stop
    assert out.lengths[0] == free[0].index(eos) + 1 <= 4
    # All rows stopping ends the loop early without changing what was produced.
    first = generate(model, PROMPTS, 8, eos_id=[t[0] for t in free], bucket=16)
    assert (first.lengths == 1).all()
    assert first.tokens[:, 0].tolist() == [t[0] for t in free]


def test_compiles_once_per_batch_bucket_and_length():
    model = _model("llama_gqa")
    generate(model, [[1, 2, 3], [4]], 5, bucket=8)
    before = trace_count()
    # Same batch size, prompts in the same 8-token bucket, same max_new_tokens: no retrace,
    # even with other EOS ids, another pad id.
    generate(model, [[9, 8, 7, 6, 5, 4], [3, 3]], 5, bucket=8, eos_id=3)
    generate(model, [[1], [2, 2, 2, 2, 2, 2, 2, 2]], 5, bucket=8, pad_id=1)
    assert trace_count() == before
    generate(model, [[1] * 9, [4]], 5, bucket=8)  # another bucket: the counter does count
    assert trace_count() == before + 1


def test_left_padding_and_batch_do_not_change_a_row():
    model = _model("neox_rot25")
    alone = generate(model, [PROMPTS[1]], 8, bucket=4).as_lists()[0]
    batched = generate(model, PROMPTS, 8, bucket=16).as_lists()[1]
    assert alone == batched


@jax.jit
def _draws(logits, temperature, top_p):
    """600 draws of next_tokens, one per key."""
    keys = jax.vmap(lambda i: step_keys(jax.random.key(i), 0, jnp.arange(1)))(jnp.arange(600))
    return jax.vmap(lambda k: next_tokens(logits, k, temperature, top_p)[0])(keys)


def test_nucleus_sampling():
    logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
    draws = np.asarray(_draws(logits, 1.0, 0.7))
    # 0.5 + 0.3 reaches 0.7: only tokens 0 and 1 remain, renormalised to 5/8 and 3/8.
    assert set(draws.tolist()) == {0, 1}
    assert abs((draws == 0).mean() - 0.625) < 0.06
    # A tiny nucleus is greedy; top_p 1 and temperature 1 follow the distribution.
    assert set(np.asarray(_draws(logits, 1.0, 1e-6)).tolist()) == {0}
    freq = np.bincount(np.asarray(_draws(logits, 1.0, 1.0)), minlength=4) / 600
    np.testing.assert_allclose(freq, [0.5, 0.3, 0.15, 0.05], atol=0.05)
    # Temperature 2 flattens it: probabilities go as sqrt(p).
    hot = np.sqrt([0.5, 0.3, 0.15, 0.05])
    freq = np.bincount(np.asarray(_draws(logits, 2.0, 1.0)), minlength=4) / 600
    np.testing.assert_allclose(freq, hot / hot.sum(), atol=0.05)
    # Low temperature concentrates on the argmax.
    assert set(np.asarray(_draws(logits, 0.05, 1.0)).tolist()) == {0}


def test_pad_prompts_left_pads_to_bucket():
    tokens, mask = pad_prompts([[1, 2, 3], [4]], pad_id=9, bucket=4)
    assert tokens.tolist() == [[9, 1, 2, 3], [9, 9, 9, 4]]
    assert mask.tolist() == [[0, 1, 1, 1], [0, 0, 0, 1]]
    assert pad_prompts([[1] * 5], 0, 4)[0].shape == (1, 8)


def test_bad_arguments():
    model = _model("llama_gqa")
    with pytest.raises(ValueError, match="explicit key"):
        generate(model, PROMPTS, 4, temperature=0.7)
    with pytest.raises(ValueError, match="top_p"):
        generate(model, PROMPTS, 4, top_p=0.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, PROMPTS, 0)
    with pytest.raises(ValueError, match="at least one token"):
        generate(model, [[1], []], 4)
    with pytest.raises(ValueError, match="token ids"):
        generate(model, [[VOCAB]], 4)


def test_generate_text_round_trip():
    from gptjax.models.tokenizer import load_tokenizer
    from gptjax.paths import pythia_tokenizer

    path = pythia_tokenizer()
    if not path.is_file():
        pytest.skip(f"no Pythia tokenizer at {path}")
    tok = load_tokenizer(path)
    model = init_model(pythia_style(hidden_size=32, num_layers=1, num_heads=2), seed=0)
    texts = generate_text(model, tok, ["Hello there", "A"], 5, eos_id=[])
    prompts = tok.encode_batch(["Hello there", "A"])
    ids = generate(model, prompts, 5, eos_id=[], pad_id=tok.pad_id).as_lists()
    assert texts == [tok.decode(i) for i in ids]


def _moved_runs(state, count: int, seed: int) -> tuple[list, object]:
    """``count`` runs' parameters: ``state`` moved by independent noise each ([runs], stacked)."""
    runs = []
    for g in range(count):
        leaves, treedef = jax.tree.flatten(state)
        keys = jax.random.split(jax.random.key(seed + g), len(leaves))
        moved = [x + 0.2 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
        runs.append(jax.tree.unflatten(treedef, moved))
    return runs, jax.tree.map(lambda *xs: jnp.stack(xs), *runs)


@pytest.mark.parametrize("frozen_split", [False, True])
def test_generate_runs_equals_generate_on_each_run(frozen_split):
    """A collection group's runs decode at once (vmapped) exactly as one by one; with partial
    fine-tuning the frozen parameters are shared and only the trained ones are stacked."""
    base = _model("llama_gqa")
    if frozen_split:
        graphdef, _, frozen = nnx.split(base, lambda path, _: path[0] == "layers", ...)
    else:
        graphdef, frozen = nnx.split(base)[0], None
    state = nnx.split(base, lambda path, _: path[0] == "layers", ...)[1]
    if not frozen_split:
        state = nnx.split(base)[1]
    runs, stacked = _moved_runs(state, 3, seed=100)
    keys = jnp.stack([jax.random.key(9 + g) for g in range(3)])
    for kwargs in ({}, {"temperature": 0.9, "top_p": 0.8}):
        together = generate_runs(
            graphdef, stacked, frozen, PROMPTS, 8, bucket=16, keys=keys, **kwargs
        )
        alone = [
            generate(
                nnx.merge(graphdef, runs[g], *([] if frozen is None else [frozen])),
                PROMPTS, 8, bucket=16, key=keys[g], **kwargs,
            ).as_lists()
            for g in range(3)
        ]  # fmt: skip
        assert [out.as_lists() for out in together] == alone
        assert alone[0] != alone[1]  # the runs really differ


def test_decoding_in_chunks_gives_the_tokens_of_one_batch():
    """generate_runs over the prompts in chunks (first_row = each chunk's start) makes every
    run's tokens the batch makes at once, greedy and sampled: what collect.generation_chunk
    relies on to bound the KV cache without changing a number."""
    base = _model("neox_rot25")
    graphdef, state = nnx.split(base)
    _, stacked = _moved_runs(state, 2, seed=50)
    keys = jnp.stack([jax.random.key(7 + g) for g in range(2)])
    for kwargs in ({}, {"temperature": 1.0, "top_p": 0.9}):
        whole = generate_runs(graphdef, stacked, None, PROMPTS, 8, bucket=4, keys=keys, **kwargs)
        parts = [
            generate_runs(
                graphdef, stacked, None, PROMPTS[start : start + 2], 8, bucket=4, keys=keys,
                first_row=start, **kwargs,
            )
            for start in range(0, len(PROMPTS), 2)
        ]  # fmt: skip
        for g in range(2):
            chunked = [row for part in parts for row in part[g].as_lists()]
            assert chunked == whole[g].as_lists(), (g, kwargs)
    # Without first_row, a sampled chunk draws other tokens: the offset is what keeps them.
    sampled = {"temperature": 1.0, "top_p": 1.0}
    shifted = generate_runs(graphdef, stacked, None, PROMPTS[2:], 8, bucket=4, keys=keys, **sampled)
    reference = generate_runs(graphdef, stacked, None, PROMPTS, 8, bucket=4, keys=keys, **sampled)
    assert shifted[0].as_lists() != reference[0].as_lists()[2:]


def test_lowered_decoding_needs_no_weights():
    """lower_generate_runs compiles the group's decoding for shape-only parameters; its memory
    analysis counts the KV cache, which grows with the number of prompts."""
    from gptjax.models.generate import lower_generate_runs

    base = _model("neox_rot25")
    graphdef, state = nnx.split(base)
    shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct((2, *a.shape), a.dtype), state)
    temps = [
        lower_generate_runs(graphdef, shapes, PROMPTS * n, 8, bucket=4)
        .compile()
        .memory_analysis()
        .temp_size_in_bytes
        for n in (1, 8)
    ]
    assert 0 < temps[0] < temps[1]
