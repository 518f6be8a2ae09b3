"""The tokenizer a GGUF file describes (byte-level BPE), with its chat template."""

from __future__ import annotations

import dataclasses
import os

import tokenizers

from gptjax.models.gguf_file import GGUFFile, open_gguf
from gptjax.models.tokenizer import Tokenizer


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
