"""A small tokenizer facade over Hugging Face `tokenizers`, loaded from local files only."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import tokenizers


@dataclass
class Tokenizer:
    """Wraps a `tokenizers.Tokenizer`; ids are plain Python ints.

    ``eos_id`` ends generation and separates documents; ``pad_id`` fills padded positions
    (it is never attended to or scored, so reusing EOS is fine).
    """

    backend: tokenizers.Tokenizer
    eos_id: int
    pad_id: int
    bos_id: int | None = None

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)


def _find_token(backend: tokenizers.Tokenizer, candidates: list[str]) -> int | None:
    for token in candidates:
        idx = backend.token_to_id(token)
        if idx is not None:
            return idx
    return None


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load a tokenizer from a `tokenizer.json` file or a directory holding one.

    Never touches a hub: a path that does not exist is an error naming it.
    """
    path = Path(path).expanduser()
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(
            f"tokenizer not found: {file} (expected a Hugging Face tokenizer.json, "
            "or a directory that contains one)"
        )
    try:
        backend = tokenizers.Tokenizer.from_file(str(file))
    except Exception as err:  # tokenizers raises a bare Exception on malformed JSON
        raise ValueError(f"malformed tokenizer file {file}: {err}") from err
    eos = _find_token(backend, ["<|endoftext|>", "</s>", "<|im_end|>", "<eos>", "[SEP]"])
    if eos is None:
        raise ValueError(f"{file}: no end-of-sequence token found")
    bos = _find_token(backend, ["<s>", "<|im_start|>", "<bos>"])
    pad = _find_token(backend, ["<|padding|>", "<pad>", "[PAD]"])
    return Tokenizer(backend=backend, eos_id=eos, pad_id=eos if pad is None else pad, bos_id=bos)


@dataclass
class CompactTokenizer:
    """A tokenizer restricted to the token ids that occur in a known set of texts.

    Ids are renumbered densely (0..V'-1), so a small model trained from scratch on a small
    task (the demo) need not carry a 50k-row embedding and unembedding. Tokens outside the
    set map to ``unk_id``. Text round-trips exactly for the texts it was built from.
    """

    base: Tokenizer
    base_ids: list[int]  # compact id -> base id

    def __post_init__(self):
        self._to_compact = {b: i for i, b in enumerate(self.base_ids)}
        for special in (self.base.eos_id, self.base.pad_id):
            if special not in self._to_compact:
                raise ValueError("CompactTokenizer: base_ids must include eos and pad ids")
        self.eos_id = self._to_compact[self.base.eos_id]
        self.pad_id = self._to_compact[self.base.pad_id]
        self.unk_id = self.pad_id
        self.bos_id = None

    @classmethod
    def from_texts(cls, base: Tokenizer, texts: list[str]) -> CompactTokenizer:
        ids = {base.eos_id, base.pad_id}
        for encoded in base.encode_batch(list(texts)):
            ids.update(encoded)
        return cls(base=base, base_ids=sorted(ids))

    def encode(self, text: str) -> list[int]:
        return [self._to_compact.get(i, self.unk_id) for i in self.base.encode(text)]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [
            [self._to_compact.get(i, self.unk_id) for i in ids]
            for ids in self.base.encode_batch(texts)
        ]

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        base = [self.base_ids[int(i)] for i in ids if 0 <= int(i) < len(self.base_ids)]
        return self.base.decode(base, skip_special_tokens=skip_special_tokens)

    @property
    def vocab_size(self) -> int:
        return len(self.base_ids)
