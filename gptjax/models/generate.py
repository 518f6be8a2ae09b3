"""Autoregressive generation with a KV cache, compiled once per shape.

Prompts of different lengths are left-padded to a bucket length, so every row's last prompt
token sits in the same slot and one decode step serves the whole batch; rotary positions come
from the padding mask (a row's first real token is position 0), so padding changes nothing.
The prefill and the whole decode loop (a ``lax.while_loop`` that exits once every row has hit
EOS) run in one jitted call, which compiles once per (batch, prompt bucket, max_new_tokens,
greedy or sampling): the temperature, top-p, EOS ids and key are traced values.

Randomness is explicit: the token of row r at step i is drawn with
``fold_in(fold_in(key, i), r)``, so a row's sample depends on neither batch size nor padding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gptjax.models.tokenizer import Tokenizer
from gptjax.models.transformer import Transformer

_MAX_EOS = 8  # EOS ids are padded to a fixed count so a new set of them does not recompile
_traces = 0  # times the generation loop has been traced (i.e. compiled); see trace_count()


@dataclasses.dataclass
class Generation:
    """New tokens [B, max_new_tokens] (pad_id after a row stops) and how many each row made
    (its EOS included)."""

    tokens: np.ndarray
    lengths: np.ndarray

    def as_lists(self) -> list[list[int]]:
        return [row[:n].tolist() for row, n in zip(self.tokens, self.lengths, strict=True)]


def trace_count() -> int:
    """How many times the jitted generation loop has been traced since import."""
    return _traces


def step_keys(key: jax.Array, step: jax.Array | int, rows: jax.Array) -> jax.Array:
    """One key per row for decode step ``step``: independent of batch size and padding."""
    step_key = jax.random.fold_in(key, step)
    return jax.vmap(lambda r: jax.random.fold_in(step_key, r))(rows)


def next_tokens(
    logits: jax.Array,
    keys: jax.Array | None,
    temperature: jax.Array | float,
    top_p: jax.Array | float,
) -> jax.Array:
    """Greedy (keys None) or temperature / nucleus sampling of [B, V] float logits."""
    logits = logits.astype(jnp.float32)
    if keys is None:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / temperature
    # Nucleus: keep the most likely tokens until their mass reaches top_p (the token that
    # crosses it included, so at least one survives); cut the rest at the smallest kept logit.
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    kept = jnp.maximum((mass_before < top_p).sum(-1), 1)
    cutoff = jnp.take_along_axis(sorted_logits, kept[:, None] - 1, axis=-1)
    logits = jnp.where(logits >= cutoff, logits, -jnp.inf)
    return jax.vmap(jax.random.categorical)(keys, logits).astype(jnp.int32)


def _generate_loop(
    state: nnx.State | tuple[nnx.State, ...],
    tokens: jax.Array,
    mask: jax.Array,
    key: jax.Array,
    first_row: jax.Array,
    eos_ids: jax.Array,
    temperature: jax.Array,
    top_p: jax.Array,
    pad_id: jax.Array,
    *,
    graphdef: nnx.GraphDef,
    max_new_tokens: int,
    sample: bool,
) -> jax.Array:
    global _traces
    _traces += 1  # runs at trace time only: counts compilations
    model = nnx.merge(graphdef, *(state if isinstance(state, tuple) else (state,)))
    batch, prompt_len = tokens.shape
    # A row's keys follow its index in the whole prompt list, so decoding the prompts in
    # chunks (first_row > 0) samples the same tokens as decoding them at once.
    rows = first_row + jnp.arange(batch)
    lengths = mask.sum(-1)

    def choose(logits, step):
        keys = step_keys(key, step, rows) if sample else None
        return next_tokens(logits, keys, temperature, top_p)

    cache = model.init_cache(batch, prompt_len + max_new_tokens)
    key_mask = jnp.zeros((batch, prompt_len + max_new_tokens), bool)
    key_mask = key_mask.at[:, :prompt_len].set(mask.astype(bool))
    positions = jnp.maximum(jnp.cumsum(mask, axis=-1) - 1, 0)
    hidden, cache = model(tokens, positions, key_mask, cache=cache, cache_index=0)
    first = choose(model.unembed(hidden[:, -1]), 0)
    out = jnp.full((batch, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(first)
    done = jnp.isin(first, eos_ids)

    def cond(carry):
        step, _, _, _, done = carry
        return (step < max_new_tokens) & ~done.all()

    def body(carry):
        step, out, cache, key_mask, done = carry
        slot = prompt_len + step - 1  # where the previous token goes
        key_mask = jax.lax.dynamic_update_slice(key_mask, jnp.ones((batch, 1), bool), (0, slot))
        prev = jax.lax.dynamic_slice_in_dim(out, step - 1, 1, axis=1)
        pos = (lengths + step - 1)[:, None]
        hidden, cache = model(prev, pos, key_mask, cache=cache, cache_index=slot)
        tok = choose(model.unembed(hidden[:, 0]), step)
        tok = jnp.where(done, pad_id, tok)
        out = jax.lax.dynamic_update_slice(out, tok[:, None], (0, step))
        return step + 1, out, cache, key_mask, done | jnp.isin(tok, eos_ids)

    carry = (jnp.asarray(1, jnp.int32), out, cache, key_mask, done)
    return jax.lax.while_loop(cond, body, carry)[1]


_STATIC = ("graphdef", "max_new_tokens", "sample")
_generate_jit = jax.jit(_generate_loop, static_argnames=_STATIC)


@partial(jax.jit, static_argnames=_STATIC)
def _generate_runs_jit(trained, frozen, tokens, mask, keys, first_row, *rest, **static):
    """The runs of a collection group at once: trained parameters stacked [G, ...], one key
    per run; ``frozen`` (a tuple: () or the frozen parameters of partial fine-tuning) is
    shared by every run."""

    def one(state, key):
        return _generate_loop((state, *frozen), tokens, mask, key, first_row, *rest, **static)

    return jax.vmap(one)(trained, keys)


def pad_prompts(
    prompts: Sequence[Sequence[int]], pad_id: int, bucket: int
) -> tuple[np.ndarray, np.ndarray]:
    """Left-pad token lists to the longest, rounded up to a multiple of ``bucket``."""
    if not prompts:
        raise ValueError("generate: no prompts")
    longest = max(len(p) for p in prompts)
    if min(len(p) for p in prompts) == 0:
        raise ValueError("generate: every prompt needs at least one token")
    width = -(-longest // bucket) * bucket
    tokens = np.full((len(prompts), width), pad_id, np.int32)
    mask = np.zeros((len(prompts), width), np.int32)
    for i, p in enumerate(prompts):
        tokens[i, width - len(p) :] = p
        mask[i, width - len(p) :] = 1
    return tokens, mask


def _checked(
    cfg: Any,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    eos_id: int | Sequence[int] | None,
    temperature: float,
    top_p: float,
    has_key: bool,
    pad_id: int,
    bucket: int,
) -> tuple[jax.Array, jax.Array, tuple, dict[str, Any], list[int]]:
    """(tokens, mask, the traced arguments after the key, the static ones, EOS ids) of a
    call of the jitted loop, its arguments checked; one place for `generate` and
    `generate_runs`."""
    if max_new_tokens < 1:
        raise ValueError(f"generate: max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"generate: temperature must be >= 0, got {temperature}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"generate: top_p must be in (0, 1], got {top_p}")
    if temperature > 0 and not has_key:
        raise ValueError("generate: sampling (temperature > 0) needs an explicit key")
    if eos_id is None:
        eos_id = cfg.eos_token_id
    eos = [] if eos_id is None else [eos_id] if isinstance(eos_id, int) else list(eos_id)
    if len(eos) > _MAX_EOS:
        raise ValueError(f"generate: at most {_MAX_EOS} EOS ids, got {len(eos)}")
    eos_ids = np.full(_MAX_EOS, -1, np.int32)
    eos_ids[: len(eos)] = eos
    tokens, mask = pad_prompts(prompts, pad_id, bucket)
    vocab = cfg.vocab_size
    if tokens.max() >= vocab or tokens.min() < 0:
        raise ValueError(f"generate: prompt token ids must be in [0, {vocab})")
    traced = (
        jnp.asarray(eos_ids),
        jnp.float32(max(temperature, 1e-6)),
        jnp.float32(top_p),
        jnp.int32(pad_id),
    )
    static = {"max_new_tokens": int(max_new_tokens), "sample": temperature > 0}
    return jnp.asarray(tokens), jnp.asarray(mask), traced, static, eos


def _generation(out: np.ndarray, eos: list[int], max_new_tokens: int) -> Generation:
    is_eos = np.isin(out, eos)
    lengths = np.where(is_eos.any(-1), is_eos.argmax(-1) + 1, max_new_tokens)
    return Generation(tokens=out, lengths=lengths.astype(np.int32))


def generate(
    model: Transformer,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    eos_id: int | Sequence[int] | None = None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    key: jax.Array | None = None,
    pad_id: int = 0,
    bucket: int = 32,
) -> Generation:
    """Continue each prompt (a list of token ids) by up to ``max_new_tokens`` tokens.

    temperature 0 is greedy decoding; above 0 it samples (optionally from the top-p nucleus)
    and needs an explicit ``key``. A row stops after emitting one of ``eos_id`` (default: the
    model config's EOS); the loop stops when all rows have, or after max_new_tokens.
    """
    tokens, mask, traced, static, eos = _checked(
        model.config, prompts, max_new_tokens, eos_id, temperature, top_p, key is not None,
        pad_id, bucket,
    )  # fmt: skip
    graphdef, state = nnx.split(model)
    key = jax.random.key(0) if key is None else key
    out = _generate_jit(
        state, tokens, mask, key, jnp.int32(0), *traced, graphdef=graphdef, **static
    )
    return _generation(np.asarray(out), eos, max_new_tokens)


def generate_runs(
    graphdef: nnx.GraphDef,
    trained: nnx.State,
    frozen: nnx.State | None,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    eos_id: int | Sequence[int] | None = None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    keys: jax.Array | None = None,
    pad_id: int = 0,
    bucket: int = 32,
    first_row: int = 0,
) -> list[Generation]:
    """`generate` for G models at once, vmapped: ``trained`` holds G runs' parameters stacked
    on a leading axis, ``frozen`` the parameters they share (partial fine-tuning) or None;
    model g is ``nnx.merge(graphdef, trained[g], frozen)``. ``keys`` [G]: one per run (needed
    to sample). Row g of the result equals ``generate`` on model g with key ``keys[g]``.
    ``first_row``: the index of ``prompts[0]`` in a longer list decoded in chunks (a row's
    sampling keys follow that index)."""
    args, static, eos = _runs_call(
        graphdef, trained, frozen, prompts, max_new_tokens, eos_id, temperature, top_p, keys,
        pad_id, bucket, first_row,
    )  # fmt: skip
    out = _generate_runs_jit(*args, graphdef=graphdef, **static)
    return [_generation(row, eos, max_new_tokens) for row in np.asarray(out)]


def lower_generate_runs(
    graphdef: nnx.GraphDef,
    trained: Any,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    pad_id: int = 0,
    bucket: int = 32,
) -> jax.stages.Lowered:
    """`generate_runs`'s jitted decoding (greedy, full fine-tuning) lowered for ``trained``
    given as shapes only (jax.ShapeDtypeStruct leaves, [G, ...]): what it would hold in
    memory, from XLA's analysis of the compiled program, without any weights."""
    args, static, _ = _runs_call(
        graphdef, trained, None, prompts, max_new_tokens, None, 0.0, 1.0, None, pad_id, bucket, 0
    )
    return _generate_runs_jit.lower(*args, graphdef=graphdef, **static)


def _runs_call(
    graphdef, trained, frozen, prompts, max_new_tokens, eos_id, temperature, top_p, keys,
    pad_id, bucket, first_row,
) -> tuple[tuple, dict[str, Any], list[int]]:  # fmt: skip
    """(the traced arguments of `_generate_runs_jit`, its static ones but the graphdef, the
    EOS ids): `generate_runs`' checks and defaults, shared with `lower_generate_runs`."""
    model_cfg = nnx.merge(graphdef, trained, *([] if frozen is None else [frozen])).config
    count = jax.tree.leaves(trained)[0].shape[0]
    tokens, mask, traced, static, eos = _checked(
        model_cfg, prompts, max_new_tokens, eos_id, temperature, top_p, keys is not None,
        pad_id, bucket,
    )  # fmt: skip
    keys = jax.random.split(jax.random.key(0), count) if keys is None else keys
    shared = () if frozen is None else (frozen,)
    return (trained, shared, tokens, mask, keys, jnp.int32(first_row), *traced), static, eos


def generate_text(
    model: Transformer,
    tokenizer: Tokenizer,
    texts: Sequence[str],
    max_new_tokens: int,
    **kwargs: Any,
) -> list[str]:
    """Text in, text out: tokenizes (no BOS added), generates, decodes without special tokens.

    kwargs go to `generate`; eos_id and pad_id default to the tokenizer's.
    """
    kwargs.setdefault("eos_id", tokenizer.eos_id)
    kwargs.setdefault("pad_id", tokenizer.pad_id)
    result = generate(model, tokenizer.encode_batch(list(texts)), max_new_tokens, **kwargs)
    return [tokenizer.decode(ids) for ids in result.as_lists()]
