"""GGUF (llama.cpp) checkpoints -> float32 gptjax models (the tokenizer a GGUF carries is read
by ``gptjax.models.gguf_tokenizer``).

No torch at run time: the `gguf` package memory-maps the file and dequantises its blocks
(Q4_1, Q8_0, ...) with numpy. Two things separate a GGUF from a Hugging Face checkpoint:

* ggml lists a tensor's dims innermost first. The reader hands back numpy arrays in the
  usual row-major order, which for a linear layer is ``[out, in]``: the layout of HF's
  ``nn.Linear.weight``, so the HF converters (transpose, concatenate) apply unchanged.
* llama.cpp's converter permutes the rows of Q and K inside every head, from HF's rotate-half
  layout (dim i is paired with dim i + d/2) to the interleaved pairs (2i, 2i+1) that ggml's
  rope kernel wants. ``_unpermute_heads`` undoes that so our rotate-half rotary applies.

Only local files are read; nothing is ever fetched from a hub.
"""

from __future__ import annotations

import os

import numpy as np

from gptjax.models.config import ModelConfig
from gptjax.models.gguf_file import GGUFFile, open_gguf
from gptjax.models.gguf_tokenizer import GGUFTokenizer, load_gguf_tokenizer
from gptjax.models.transformer import Transformer
from gptjax.models.weight_mapping import (
    Mapping,
    build_from_mapping,
    concat_transpose,
    identity,
    transpose,
)

SUPPORTED_ARCHITECTURES = ("llama",)


def gguf_config(file: str | os.PathLike | GGUFFile) -> ModelConfig:
    """A ModelConfig from the GGUF's metadata (llama.* keys; vocab size from the tokens)."""
    f = open_gguf(file)
    arch = f.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"{f.path}: unsupported architecture {arch!r}; supported: {SUPPORTED_ARCHITECTURES}"
        )
    p = arch + "."
    hidden = f.get_int(p + "embedding_length")
    heads = f.get_int(p + "attention.head_count")
    if heads <= 0:
        raise ValueError(f"{f.path}: {p}attention.head_count must be positive, got {heads}")
    head_dim = f.get_int(p + "attention.key_length", hidden // heads)
    rope_dim = f.get_int(p + "rope.dimension_count", head_dim)
    if rope_dim != head_dim:
        raise ValueError(
            f"{f.path}: partial rotary ({p}rope.dimension_count {rope_dim} != head dim "
            f"{head_dim}) is not supported for {arch}"
        )
    scaling = f.get(p + "rope.scaling.type", "none")
    if scaling not in ("none", ""):
        raise ValueError(f"{f.path}: rope scaling {scaling!r} is not supported")
    if "tokenizer.ggml.tokens" in f:
        vocab = len(f.get("tokenizer.ggml.tokens"))
    elif p + "vocab_size" in f:
        vocab = f.get_int(p + "vocab_size")
    elif "token_embd.weight" in f.tensors:
        vocab = int(f.tensors["token_embd.weight"].shape[-1])  # ggml order: [d_model, vocab]
    else:
        raise ValueError(f"{f.path}: cannot tell the vocabulary size (no tokens, no embedding)")
    try:
        return ModelConfig(
            arch="llama",
            vocab_size=vocab,
            hidden_size=hidden,
            num_layers=f.get_int(p + "block_count"),
            num_heads=heads,
            num_kv_heads=f.get_int(p + "attention.head_count_kv", heads),
            head_dim=None if head_dim == hidden // heads else head_dim,
            intermediate_size=f.get_int(p + "feed_forward_length"),
            rope_theta=float(f.get(p + "rope.freq_base", 10000.0)),
            norm_eps=float(f.get(p + "attention.layer_norm_rms_epsilon", 1e-5)),
            tie_embeddings="output.weight" not in f.tensors,
            max_position_embeddings=f.get_int(p + "context_length", 2048),
            bos_token_id=f.get("tokenizer.ggml.bos_token_id", None),
            eos_token_id=f.get("tokenizer.ggml.eos_token_id", None),
        )
    except ValueError as err:
        raise ValueError(f"{f.path}: {err}") from err


def _unpermute_heads(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Inverse of llama.cpp's Q/K row permutation: within each head, rows come in interleaved
    rotary pairs (0, d/2), (1, d/2 + 1), ...; put them back as [first halves | second halves]."""
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def permute_heads(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's Q/K row permutation (HF rotate-half -> interleaved); for writing GGUFs."""
    rows = w.shape[0]
    return w.reshape(n_heads, 2, rows // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_param_mapping(cfg: ModelConfig) -> Mapping:
    """Our parameter paths -> (GGUF tensor names, converter), for llama-architecture files."""
    if cfg.arch != "llama":
        raise ValueError(f"GGUF mapping exists for llama only, not {cfg.arch!r}")
    h, kv = cfg.num_heads, cfg.kv_heads

    def qkv(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        return transpose(
            np.concatenate([_unpermute_heads(q, h), _unpermute_heads(k, kv), v], axis=0)
        )

    m: Mapping = {("embed", "embedding"): (("token_embd.weight",), identity)}
    for i in range(cfg.num_layers):
        b, ours = f"blk.{i}.", ("layers", i)
        m[(*ours, "attn_norm", "scale")] = ((b + "attn_norm.weight",), identity)
        m[(*ours, "mlp_norm", "scale")] = ((b + "ffn_norm.weight",), identity)
        m[(*ours, "attn", "qkv", "kernel")] = (
            (b + "attn_q.weight", b + "attn_k.weight", b + "attn_v.weight"),
            qkv,
        )
        m[(*ours, "attn", "out", "kernel")] = ((b + "attn_output.weight",), transpose)
        m[(*ours, "mlp", "up", "kernel")] = (
            (b + "ffn_gate.weight", b + "ffn_up.weight"),
            concat_transpose,
        )
        m[(*ours, "mlp", "down", "kernel")] = ((b + "ffn_down.weight",), transpose)
    m[("final_norm", "scale")] = (("output_norm.weight",), identity)
    if not cfg.tie_embeddings:
        m[("lm_head", "kernel")] = (("output.weight",), transpose)
    return m


def load_gguf_model(path: str | os.PathLike | GGUFFile) -> Transformer:
    """A float32 model from a llama-architecture GGUF file (any type `gguf` dequantises)."""
    f = open_gguf(path)
    cfg = gguf_config(f)
    mapping = gguf_param_mapping(cfg)
    used = {name for names, _ in mapping.values() for name in names}
    # A tensor we would drop (a bias, rope_freqs for scaled rope, ...) means the model we build
    # is not the one in the file: refuse rather than silently compute something else.
    unused = sorted(set(f.tensors) - used)
    if unused:
        raise ValueError(
            f"{f.path}: tensors {unused[:5]} are not part of the supported {cfg.arch} layout"
        )
    return build_from_mapping(cfg, f.tensor, str(f.path), mapping)


def load_gguf(path: str | os.PathLike) -> tuple[Transformer, GGUFTokenizer]:
    """Model and tokenizer from one GGUF file, parsed once."""
    f = open_gguf(path)
    return load_gguf_model(f), load_gguf_tokenizer(f)
