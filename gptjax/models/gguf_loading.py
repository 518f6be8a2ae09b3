"""GGUF (llama.cpp) checkpoints -> float32 gptjax models, and the tokenizer a GGUF carries.

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

import dataclasses
import os
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import tokenizers

from gptjax.models.config import ModelConfig
from gptjax.models.hf_loading import Mapping, _concat_t, _identity, _t, build_model
from gptjax.models.tokenizer import Tokenizer
from gptjax.models.transformer import Transformer

SUPPORTED_ARCHITECTURES = ("llama",)
_MISSING = object()


class GGUFFile:
    """A parsed GGUF file: metadata by key and float32 tensors by name, with errors that name
    the file (and the key or tensor) instead of the reader's bare messages."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise FileNotFoundError(
                f"GGUF file not found: {self.path} (only local files are read; "
                "nothing is downloaded from a hub)"
            )
        try:
            self.reader = gguf.GGUFReader(str(self.path))
        except Exception as err:  # the reader raises ValueError, IndexError, ... on bad bytes
            raise ValueError(
                f"{self.path}: not a readable GGUF file ({type(err).__name__}: {err})"
            ) from err
        self.tensors = {t.name: t for t in self.reader.tensors}

    def __contains__(self, key: str) -> bool:
        return key in self.reader.fields

    def get(self, key: str, default: Any = _MISSING) -> Any:
        """A metadata value as a Python object (str, int, float, bool or list)."""
        field = self.reader.fields.get(key)
        if field is None:
            if default is _MISSING:
                raise ValueError(f"{self.path}: metadata key {key!r} is missing")
            return default
        try:
            return field.contents()
        except Exception as err:
            raise ValueError(f"{self.path}: metadata key {key!r} is malformed ({err})") from err

    def get_int(self, key: str, default: Any = _MISSING) -> int:
        value = self.get(key, default)
        # Some architectures store per-layer lists (e.g. head counts); llama never does.
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(
                f"{self.path}: metadata key {key!r} should be an integer, got {value!r}"
            )
        return value

    def tensor(self, name: str) -> np.ndarray:
        """The named tensor, dequantised to float32, in row-major (``[out, in]``) order."""
        info = self.tensors.get(name)
        if info is None:
            raise ValueError(f"{self.path}: tensor {name!r} is missing")
        try:
            values = gguf.quants.dequantize(info.data, info.tensor_type)
        except Exception as err:  # NotImplementedError for types gguf cannot dequantise
            raise ValueError(
                f"{self.path}: cannot dequantise tensor {name!r} of type "
                f"{info.tensor_type.name} ({err})"
            ) from err
        shape = tuple(int(d) for d in reversed(info.shape.tolist()))
        values = np.asarray(values, dtype=np.float32)
        if values.size != int(np.prod(shape)):
            raise ValueError(
                f"{self.path}: tensor {name!r} holds {values.size} values, but its header "
                f"declares shape {shape}"
            )
        return values.reshape(shape)


def open_gguf(path: str | os.PathLike | GGUFFile) -> GGUFFile:
    return path if isinstance(path, GGUFFile) else GGUFFile(path)


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
        return _t(np.concatenate([_unpermute_heads(q, h), _unpermute_heads(k, kv), v], axis=0))

    m: Mapping = {("embed", "embedding"): (("token_embd.weight",), _identity)}
    for i in range(cfg.num_layers):
        b, ours = f"blk.{i}.", ("layers", i)
        m[(*ours, "attn_norm", "scale")] = ((b + "attn_norm.weight",), _identity)
        m[(*ours, "mlp_norm", "scale")] = ((b + "ffn_norm.weight",), _identity)
        m[(*ours, "attn", "qkv", "kernel")] = (
            (b + "attn_q.weight", b + "attn_k.weight", b + "attn_v.weight"),
            qkv,
        )
        m[(*ours, "attn", "out", "kernel")] = ((b + "attn_output.weight",), _t)
        m[(*ours, "mlp", "up", "kernel")] = (
            (b + "ffn_gate.weight", b + "ffn_up.weight"),
            _concat_t,
        )
        m[(*ours, "mlp", "down", "kernel")] = ((b + "ffn_down.weight",), _t)
    m[("final_norm", "scale")] = (("output_norm.weight",), _identity)
    if not cfg.tie_embeddings:
        m[("lm_head", "kernel")] = (("output.weight",), _t)
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
    return build_model(cfg, f.tensor, source=str(f.path), mapping=mapping)


# ---------------------------------------------------------------------------------------------
# Tokenizer


def _byte_alphabet() -> dict[int, str]:
    """GPT-2's byte-level alphabet: printable bytes stand for themselves; the others (controls,
    space, ...) are shifted to code points from 256 up, so every byte is a visible character."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("\xa1"), ord("\xac") + 1),
        *range(ord("\xae"), ord("\xff") + 1),
    ]
    alphabet = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in alphabet:
            alphabet[b] = chr(256 + shifted)
            shifted += 1
    return alphabet


# tokenizer.ggml.pre values whose text splitting is GPT-2's regex, which the ByteLevel
# pre-tokenizer applies itself. transformers builds these the same way (SmolLM2 is "smollm").
_GPT2_REGEX_PRE = {None, "default", "gpt2", "smollm", "starcoder", "refact", "codeshell"}
_TOKEN_CONTROL, _TOKEN_USER_DEFINED = 3, 4  # llama.cpp's token types


@dataclasses.dataclass
class GGUFTokenizer(Tokenizer):
    """The tokenizer a GGUF describes, with its chat template (Jinja, as transformers runs it)."""

    chat_template: str | None = None
    bos_token: str | None = None
    eos_token: str | None = None

    def apply_chat_template(
        self, messages: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        """The conversation rendered as the model was fine-tuned to see it (a string)."""
        if not self.chat_template:
            raise ValueError("this GGUF has no tokenizer.chat_template")
        from jinja2.exceptions import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str):
            raise TemplateError(message)

        # Same environment options as transformers, so whitespace renders identically.
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        return env.from_string(self.chat_template).render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token or "",
            eos_token=self.eos_token or "",
        )

    def encode_chat(
        self, messages: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> list[int]:
        return self.encode(self.apply_chat_template(messages, add_generation_prompt))


def load_gguf_tokenizer(path: str | os.PathLike | GGUFFile) -> GGUFTokenizer:
    """Byte-level BPE from ``tokenizer.ggml.tokens/merges`` (the ``gpt2`` tokenizer model).

    Built as transformers builds it from the same file: BPE over the byte-level alphabet, the
    GPT-2 split regex, tokens marked CONTROL added as special tokens (matched whole, skipped when
    decoding), USER_DEFINED ones as plain added tokens. No normalizer; no BOS is prepended.
    """
    f = open_gguf(path)
    model_type = f.get("tokenizer.ggml.model")
    if model_type != "gpt2":
        raise ValueError(
            f"{f.path}: tokenizer model {model_type!r} is not supported (only byte-level BPE, "
            "'gpt2')"
        )
    pre = f.get("tokenizer.ggml.pre", None)
    if pre not in _GPT2_REGEX_PRE:
        raise ValueError(
            f"{f.path}: pre-tokenizer {pre!r} is not supported; supported: "
            f"{sorted(p for p in _GPT2_REGEX_PRE if p)}"
        )
    tokens: list[str] = f.get("tokenizer.ggml.tokens")
    types: list[int] = f.get("tokenizer.ggml.token_type", [1] * len(tokens))
    if len(types) != len(tokens):
        raise ValueError(
            f"{f.path}: {len(tokens)} tokens but {len(types)} entries in tokenizer.ggml.token_type"
        )
    alphabet = _byte_alphabet()
    spelled = set(alphabet.values())
    # Tokens are normally stored already spelled in the byte alphabet; respell any that are not.
    vocab = {
        tok if set(tok) <= spelled else "".join(alphabet[b] for b in tok.encode("utf-8")): i
        for i, tok in enumerate(tokens)
    }
    merges = []
    for i, merge in enumerate(f.get("tokenizer.ggml.merges")):
        parts = merge.split(" ")
        if len(parts) != 2:
            raise ValueError(f"{f.path}: tokenizer.ggml.merges[{i}] = {merge!r} is not 'a b'")
        merges.append((parts[0], parts[1]))
    try:
        bpe = tokenizers.models.BPE(
            vocab=vocab,
            merges=merges,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
        )
    except Exception as err:
        raise ValueError(f"{f.path}: cannot build a BPE tokenizer ({err})") from err
    backend = tokenizers.Tokenizer(bpe)
    backend.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(
        add_prefix_space=False, use_regex=True
    )
    backend.decoder = tokenizers.decoders.ByteLevel()
    # A CONTROL token spelled outside the byte alphabet cannot be a real byte-level token
    # (llama.cpp mislabels some); transformers skips those, and so do we.
    control = [
        tokenizers.AddedToken(tok, normalized=False, special=True)
        for tok, kind in zip(tokens, types, strict=True)
        if kind == _TOKEN_CONTROL and set(tok) <= spelled
    ]
    backend.add_special_tokens(control)
    user = [
        tokenizers.AddedToken(tok, normalized=False, special=False)
        for tok, kind in zip(tokens, types, strict=True)
        if kind == _TOKEN_USER_DEFINED and tok in vocab
    ]
    backend.add_tokens(user)

    def special(key: str) -> int | None:
        idx = f.get(f"tokenizer.ggml.{key}", None)
        if idx is not None and not 0 <= idx < len(tokens):
            raise ValueError(f"{f.path}: tokenizer.ggml.{key} = {idx} is out of range")
        return idx

    eos, bos, pad = special("eos_token_id"), special("bos_token_id"), special("padding_token_id")
    if eos is None:
        raise ValueError(f"{f.path}: no tokenizer.ggml.eos_token_id")
    return GGUFTokenizer(
        backend=backend,
        eos_id=eos,
        pad_id=eos if pad is None else pad,
        bos_id=bos,
        chat_template=f.get("tokenizer.chat_template", None),
        bos_token=None if bos is None else tokens[bos],
        eos_token=tokens[eos],
    )


def load_gguf(path: str | os.PathLike) -> tuple[Transformer, GGUFTokenizer]:
    """Model and tokenizer from one GGUF file, parsed once."""
    f = open_gguf(path)
    return load_gguf_model(f), load_gguf_tokenizer(f)
