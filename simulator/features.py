"""Frozen text features for the simulators: a BERT encoder's pooled states, or a GPT's own.

* ``encode_texts`` pools the encoder's last hidden states: ``"mean"`` over real tokens (how
  MiniLM was trained), ``"cls"`` (the [CLS] vector, what the reference used) or ``"pooler"``
  (BERT's tanh pooler over [CLS]); optional L2 normalisation (the sentence-transformers head).
* ``cached_features`` computes features once per text list and settings and keeps them as
  ``.npy`` (keyed by a hash, written atomically).
* ``pool_hidden_states`` turns a GPT model's hidden states into features (the encoder
  ablation): last real token or mean. ``gpt_features`` runs it on a gptjax ``Transformer``
  (its final-norm hidden states) and ``cached_gpt_features`` keeps the result like
  ``cached_features``, keyed by the token arrays and a digest of the model's parameters.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import tokenizers
from flax import nnx

from gptjax.io import atomic_save_npy, atomic_write_text, file_digest, fingerprint
from gptjax.models.bert import POOLINGS, load_bert, masked_mean


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


def cached_features(cache_file: str | os.PathLike, texts: Sequence[str], **kw) -> np.ndarray:
    """``encode_texts(texts, **kw)`` computed once: stored as ``<cache_file>.<hash>.npy`` where
    the hash covers the texts, the settings and the encoder's identity, with the file's sha256
    beside it (``.npy.sha256``). A cache that is damaged (digest, shape or non-finite values)
    is said so and computed again."""
    settings = {
        "pooling": kw.get("pooling", "mean"),
        "max_len": kw.get("max_len", 128),
        "normalize": kw.get("normalize", False),
        "model": _model_identity(kw.get("path")),
    }
    target = cache_path(cache_file, features_key(texts, **settings))
    return load_or_compute(target, len(texts), lambda: encode_texts(texts, **kw))


def load_or_compute(target: Path, rows: int, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """The verified cache at ``target``, else ``compute()`` written there with its sha256.
    Public so that the pipeline caches the features it computes itself (gradients) alike."""
    digest_file = target.with_name(target.name + ".sha256")
    if target.exists():
        problem = _cache_problem(target, digest_file, rows)
        if problem is None:
            return np.load(target)
        print(f"feature cache {target}: {problem}; computing it again", flush=True)
    feats = compute()
    atomic_save_npy(target, feats)
    atomic_write_text(digest_file, file_digest(target) + "\n")
    return feats


def _cache_problem(target: Path, digest_file: Path, rows: int) -> str | None:
    if not digest_file.is_file() or digest_file.read_text().strip() != file_digest(target):
        return "its checksum does not match"
    try:
        feats = np.load(target)
    except (OSError, ValueError) as err:
        return f"unreadable ({err})"
    if feats.ndim != 2 or feats.shape[0] != rows or not np.isfinite(feats).all():
        return f"shape {feats.shape} or values are not features of {rows} texts"
    return None


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


GPT_POOLINGS = ("mean", "last")


@partial(jax.jit, static_argnames=("graphdef",))
def _gpt_hidden(graphdef, state, ids, mask):
    hidden, _ = nnx.merge(graphdef, state)(ids, attention_mask=mask)
    return hidden


def gpt_features(
    model: nnx.Module,
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    pooling: str = "mean",
    batch_size: int = 32,
) -> np.ndarray:
    """float32 [M, D] features of M right-padded token rows from a gptjax ``Transformer``'s
    final-norm hidden states (D = its hidden size), pooled by `pool_hidden_states`."""
    if pooling not in GPT_POOLINGS:
        raise ValueError(f"pooling must be one of {GPT_POOLINGS}, got {pooling!r}")
    input_ids = np.asarray(input_ids, np.int32)
    attention_mask = np.asarray(attention_mask, np.int32)
    rows = len(input_ids)
    if rows == 0:
        raise ValueError("gpt_features needs at least one token row")
    batch = min(batch_size, rows)
    # Pad to whole batches with copies of row 0 (a real row: an all-masked one would attend to
    # nothing): one batch shape, one compilation. The copies are dropped below.
    fill = -rows % batch
    ids = np.concatenate([input_ids, np.repeat(input_ids[:1], fill, axis=0)])
    mask = np.concatenate([attention_mask, np.repeat(attention_mask[:1], fill, axis=0)])
    graphdef, state = nnx.split(model)

    def hidden_fn(i: jax.Array, m: jax.Array) -> jax.Array:
        return _gpt_hidden(graphdef, state, i, m)

    return pool_hidden_states(hidden_fn, ids, mask, pooling, batch)[:rows]


def cached_gpt_features(
    cache_file: str | os.PathLike,
    model: nnx.Module,
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    pooling: str = "mean",
    batch_size: int = 32,
) -> np.ndarray:
    """``gpt_features(...)`` computed once, cached like `cached_features`: the hash covers
    the token arrays, the pooling and the model's parameters (another base model, or the
    same one pretrained differently, gets other features)."""
    params = jax.tree.leaves(nnx.state(model, nnx.Param))
    settings = {
        "encoder": "gpt",
        "pooling": pooling,
        "tokens": fingerprint(input_ids, attention_mask),
        "model": fingerprint(*(np.asarray(p) for p in params)),
    }
    target = cache_path(cache_file, features_key([], **settings))
    return load_or_compute(
        target,
        len(input_ids),
        lambda: gpt_features(model, input_ids, attention_mask, pooling, batch_size),
    )
