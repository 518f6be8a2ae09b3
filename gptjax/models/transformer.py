"""A decoder-only transformer in Flax NNX that covers GPT-NeoX (Pythia) and Llama (SmolLM2).

The two families share attention, rotary embeddings, the KV cache and the unembedding;
they differ by switches in ModelConfig. Parameters keep one layout for both: the query,
key and value projections are fused into one kernel ``[d_model, (H + 2*KV) * head_dim]``
laid out as [all query heads | all key heads | all value heads] (the loaders reorder the
checkpoints' layouts into it), so a layer costs one matmul for q, k and v.

Calling convention (pure; no hidden mutable state, so a jitted step can vmap over runs):
    hidden, cache = model(tokens, positions, attention_mask)                 # training
    hidden, cache = model(tokens, positions, key_mask, cache=c, cache_index=i)  # decoding
    logits = model.unembed(hidden_at_targets)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from gptjax.models.config import ModelConfig

_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)  # finite: fully masked rows stay NaN-free


class LayerCache(NamedTuple):
    key: jax.Array  # [B, S, KV, head_dim]
    value: jax.Array  # [B, S, KV, head_dim]


def rotary_tables(positions: jax.Array, rotary_dim: int, theta: float) -> tuple[jax.Array, ...]:
    """cos, sin of shape [..., L, rotary_dim // 2] for integer positions [..., L]."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, rotary_dim, 2, dtype=jnp.float32) / rotary_dim))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq
    return jnp.cos(angles), jnp.sin(angles)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate the first rotary_dim dims of x [B, L, heads, hd] in the rotate-half convention."""
    rot = cos.shape[-1] * 2
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    x1, x2 = x_rot[..., : rot // 2], x_rot[..., rot // 2 :]
    c, s = cos[:, :, None, :], sin[:, :, None, :]
    rotated = jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)
    return jnp.concatenate([rotated.astype(x.dtype), x_pass], axis=-1)


class Attention(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.num_heads, self.kv_heads, self.head_dim = cfg.num_heads, cfg.kv_heads, cfg.dim_per_head
        init = nnx.initializers.normal(0.02)
        self.qkv = nnx.Linear(
            cfg.hidden_size,
            (self.num_heads + 2 * self.kv_heads) * self.head_dim,
            use_bias=cfg.attention_bias,
            kernel_init=init,
            rngs=rngs,
        )
        self.out = nnx.Linear(
            self.num_heads * self.head_dim,
            cfg.hidden_size,
            use_bias=cfg.attention_bias,
            kernel_init=init,
            rngs=rngs,
        )

    def __call__(
        self,
        x: jax.Array,
        rope: tuple[jax.Array, jax.Array],
        mask: jax.Array,
        cache: LayerCache | None,
        cache_index: jax.Array | None,
    ) -> tuple[jax.Array, LayerCache | None]:
        b, length, _ = x.shape
        h, kv, hd = self.num_heads, self.kv_heads, self.head_dim
        # Linear layers see [tokens, features]: with [B, L, D] the backward weight matmul
        # contracts two dims (B and L), which XLA:CPU lowers through transposes and a slow dot.
        qkv = self.qkv(x.reshape(b * length, -1)).reshape(b, length, -1)
        q = qkv[..., : h * hd].reshape(b, length, h, hd)
        k = qkv[..., h * hd : (h + kv) * hd].reshape(b, length, kv, hd)
        v = qkv[..., (h + kv) * hd :].reshape(b, length, kv, hd)
        q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        if cache is not None:
            start = (0, cache_index, 0, 0)
            k = jax.lax.dynamic_update_slice(cache.key, k.astype(cache.key.dtype), start)
            v = jax.lax.dynamic_update_slice(cache.value, v.astype(cache.value.dtype), start)
            cache = LayerCache(k, v)
        # Grouped-query attention: query head i belongs to key head i // (H/KV), as in HF.
        # Heads go in front and a key head's g query heads are stacked along the query axis,
        # so both products are plain batched [q, d] x [d, s] matmuls over (batch, key head):
        # XLA:CPU runs these (forward and backward) about twice as fast as the 5-D einsums.
        # Scaling q rather than the scores touches L*hd values instead of L*S.
        g = h // kv
        q = (q * (1.0 / math.sqrt(hd))).reshape(b, length, kv, g, hd)
        q = q.transpose(0, 2, 3, 1, 4).reshape(b, kv, g * length, hd)
        k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, KV, S, hd]
        scores = jnp.einsum("bkqd,bksd->bkqs", q, k).reshape(b, kv, g, length, -1)
        scores = jnp.where(mask[:, None, None], scores.astype(jnp.float32), _MASK_VALUE)
        probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype).reshape(b, kv, g * length, -1)
        attn = jnp.einsum("bkqs,bksd->bkqd", probs, v).reshape(b, kv, g, length, hd)
        attn = attn.transpose(0, 3, 1, 2, 4).reshape(b * length, h * hd)
        return self.out(attn).reshape(b, length, -1), cache


class MLP(nnx.Module):
    """GELU MLP (GPT-NeoX) or SwiGLU with a fused gate/up kernel (Llama)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.gated = cfg.arch == "llama"
        init = nnx.initializers.normal(0.02)
        width = cfg.intermediate_size * (2 if self.gated else 1)
        self.up = nnx.Linear(
            cfg.hidden_size, width, use_bias=cfg.mlp_bias, kernel_init=init, rngs=rngs
        )
        self.down = nnx.Linear(
            cfg.intermediate_size,
            cfg.hidden_size,
            use_bias=cfg.mlp_bias,
            kernel_init=init,
            rngs=rngs,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        shape = x.shape
        hidden = self.up(x.reshape(-1, shape[-1]))  # [tokens, features]: see Attention
        if self.gated:
            gate, up = jnp.split(hidden, 2, axis=-1)
            hidden = jax.nn.silu(gate) * up
        else:
            hidden = jax.nn.gelu(hidden, approximate=False)
        return self.down(hidden).reshape(shape)


def _norm(cfg: ModelConfig, rngs: nnx.Rngs) -> nnx.Module:
    if cfg.arch == "llama":
        return nnx.RMSNorm(cfg.hidden_size, epsilon=cfg.norm_eps, rngs=rngs)
    return nnx.LayerNorm(cfg.hidden_size, epsilon=cfg.norm_eps, rngs=rngs)


class Block(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.parallel_residual = cfg.parallel_residual
        self.attn_norm = _norm(cfg, rngs)
        self.attn = Attention(cfg, rngs=rngs)
        self.mlp_norm = _norm(cfg, rngs)
        self.mlp = MLP(cfg, rngs=rngs)

    def __call__(self, x, rope, mask, cache, cache_index):
        attn, cache = self.attn(self.attn_norm(x), rope, mask, cache, cache_index)
        if self.parallel_residual:
            return x + attn + self.mlp(self.mlp_norm(x)), cache
        x = x + attn
        return x + self.mlp(self.mlp_norm(x)), cache


class Transformer(nnx.Module):
    """Decoder-only LM. ``__call__`` returns final-norm hidden states; ``unembed`` gives logits."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        self.embed = nnx.Embed(
            cfg.vocab_size, cfg.hidden_size, embedding_init=nnx.initializers.normal(0.02), rngs=rngs
        )
        self.layers = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.num_layers)])
        self.final_norm = _norm(cfg, rngs)
        if not cfg.tie_embeddings:
            self.lm_head = nnx.Linear(
                cfg.hidden_size,
                cfg.vocab_size,
                use_bias=False,
                kernel_init=nnx.initializers.normal(0.02),
                rngs=rngs,
            )

    def __call__(
        self,
        tokens: jax.Array,
        positions: jax.Array | None = None,
        attention_mask: jax.Array | None = None,
        cache: list[LayerCache] | None = None,
        cache_index: jax.Array | int | None = None,
    ) -> tuple[jax.Array, list[LayerCache] | None]:
        """Hidden states [B, L, D] of tokens [B, L].

        positions: rotary positions [B, L] (default 0..L-1). attention_mask: [B, L] of valid
        keys without a cache, [B, S] over the cache slots with one. With a cache, the L new
        tokens are written at slots cache_index.. and attend causally to every earlier slot.
        """
        rope, mask = self._attention_inputs(
            tokens.shape, positions, attention_mask, cache, cache_index
        )
        x, new_cache = self._blocks(self.embed(tokens), rope, mask, cache, cache_index, 0)
        return self.final_norm(x), new_cache

    def residual_after(
        self, tokens: jax.Array, attention_mask: jax.Array, num_layers: int
    ) -> jax.Array:
        """The residual stream [B, L, D] after the first ``num_layers`` blocks (no final norm):
        what a partially fine-tuned model's frozen prefix computes, cached once per example."""
        rope, mask = self._attention_inputs(tokens.shape, None, attention_mask, None, None)
        x, _ = self._blocks(self.embed(tokens), rope, mask, None, None, 0, num_layers)
        return x

    def forward_from(
        self, residual: jax.Array, first_layer: int, attention_mask: jax.Array
    ) -> jax.Array:
        """Final-norm hidden states [B, L, D] from the residual stream entering block
        ``first_layer`` (see `residual_after`); `__call__` is forward_from(embed(tokens), 0)."""
        shape = residual.shape[:2]
        rope, mask = self._attention_inputs(shape, None, attention_mask, None, None)
        x, _ = self._blocks(residual, rope, mask, None, None, first_layer)
        return self.final_norm(x)

    def _attention_inputs(self, shape, positions, attention_mask, cache, cache_index):
        b, length = shape
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(length), (b, length))
        if cache is None:
            query_slots = jnp.arange(length)
            key_slots = query_slots
            key_valid = jnp.ones((b, length), bool) if attention_mask is None else attention_mask
        else:
            query_slots = cache_index + jnp.arange(length)
            key_slots = jnp.arange(cache[0].key.shape[1])
            key_valid = attention_mask
        mask = (key_slots[None, :] <= query_slots[:, None])[None] & key_valid[:, None, :].astype(
            bool
        )
        rope = rotary_tables(positions, self.config.rotary_dim, self.config.rope_theta)
        return rope, mask

    def _blocks(self, x, rope, mask, cache, cache_index, first, stop=None):
        new_cache = [] if cache is not None else None
        stop = len(self.layers) if stop is None else stop
        for i in range(first, stop):
            x, layer_cache = self.layers[i](
                x, rope, mask, None if cache is None else cache[i], cache_index
            )
            if new_cache is not None:
                new_cache.append(layer_cache)
        return x, new_cache

    def unembed(self, hidden: jax.Array) -> jax.Array:
        flat = hidden.reshape(-1, hidden.shape[-1])  # one contracting dim in the backward
        if self.config.tie_embeddings:
            logits = self.embed.attend(flat)
        else:
            logits = self.lm_head(flat)
        return logits.reshape(*hidden.shape[:-1], logits.shape[-1])

    def init_cache(self, batch: int, max_len: int, dtype=jnp.float32) -> list[LayerCache]:
        shape = (batch, max_len, self.config.kv_heads, self.config.dim_per_head)
        return [
            LayerCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))
            for _ in range(self.config.num_layers)
        ]


def init_model(cfg: ModelConfig, seed: int = 0) -> Transformer:
    """A freshly initialised model (normal(0.02) weights, as the HF families do)."""
    return Transformer(cfg, rngs=nnx.Rngs(seed))


def abstract_model(cfg: ModelConfig) -> Transformer:
    """The model's structure with shape-only parameters (no memory), for loaders."""
    return nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))


def first_trained_layer(num_layers: int, train_layers: int) -> int:
    """The first fine-tuned block when only the top ``train_layers`` blocks (and the final
    norm) are trained; 0 when every parameter is (``train_layers`` 0)."""
    if not train_layers:
        return 0
    if not 0 < train_layers < num_layers:
        raise ValueError(
            f"collect.train_layers ({train_layers}) must be below the model's {num_layers} "
            "layers (0 fine-tunes every parameter)"
        )
    return num_layers - train_layers


def is_trained(path: tuple, first_layer: int) -> bool:
    """Whether the parameter at ``path`` (names from the model down) is fine-tuned when blocks
    ``first_layer``.. and the final norm are (``first_layer`` 0: every parameter is)."""
    if not first_layer:
        return True
    return path[0] == "final_norm" or (path[0] == "layers" and int(path[1]) >= first_layer)
