"""Tokenise examples into fixed-shape numpy arrays with a target mask.

Prompt and target are encoded separately and concatenated, so the target tokens are exactly
the tokens of ``Example.target`` (plus EOS for generation targets).  Lengths are rounded up
to a multiple of ``pad_multiple`` (target lengths up to it to a power of two), so a whole pool
has one shape and a train or eval step compiles once.  When an example does not fit in
``max_len`` the prompt is shortened, never the target: by default from the middle (its
start, the instruction, and its end, the question and answer cue, are kept).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from gptjax.tasks.base import Example

# The arrays the target-token loss reads (gptjax.models.losses): the batch format of every
# training step, evaluation and gradient computation.
TOKEN_FIELDS = ("input_ids", "attention_mask", "target_pos", "target_ids", "target_mask")


@dataclasses.dataclass
class TokenizedExamples:
    """M examples as numpy arrays of fixed shapes.

    input_ids [M, L]: prompt + target, right-padded with pad_id; attention_mask [M, L].
    target_pos [M, S]: position p whose logits predict target token input_ids[p + 1].
    target_ids [M, S], target_mask [M, S] (float32): the target tokens; padding entries 0.
    prompt_ids [M, Lp], prompt_mask [M, Lp]: the (possibly shortened) prompts, LEFT-padded,
    for generation.  prompt_len / target_len [M]: real lengths.  truncated [M]: the prompt
    was shortened to fit; target_truncated [M]: the target was cut to max_target_len.
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    target_pos: np.ndarray
    target_ids: np.ndarray
    target_mask: np.ndarray
    prompt_ids: np.ndarray
    prompt_mask: np.ndarray
    prompt_len: np.ndarray | None = None
    target_len: np.ndarray | None = None
    truncated: np.ndarray | None = None
    target_truncated: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def take(self, indices: Sequence[int] | np.ndarray) -> TokenizedExamples:
        """The examples at ``indices`` (same padded shapes)."""
        idx = np.asarray(indices)
        return TokenizedExamples(
            **{
                f.name: (None if getattr(self, f.name) is None else getattr(self, f.name)[idx])
                for f in dataclasses.fields(self)
            }
        )

    def loss_inputs(self) -> dict[str, np.ndarray]:
        """The TOKEN_FIELDS arrays, as training steps and gradient code take them."""
        return {name: getattr(self, name) for name in TOKEN_FIELDS}

    def prompt_lists(self) -> list[list[int]]:
        """Each prompt's tokens without its padding, as `generate` takes them."""
        return [
            [int(t) for t, m in zip(row, mask, strict=True) if m]
            for row, mask in zip(self.prompt_ids, self.prompt_mask, strict=True)
        ]


def round_up(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)


def target_bucket(n: int, pad_multiple: int) -> int:
    """Padded target length: a power of two up to ``pad_multiple``, then multiples of it."""
    n = max(n, 1)
    if n <= pad_multiple:
        return 1 << (n - 1).bit_length()
    return round_up(n, pad_multiple)


def _encode_all(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    batch = getattr(tokenizer, "encode_batch", None)
    if batch is not None:
        return [list(ids) for ids in batch(texts)]
    return [list(tokenizer.encode(t)) for t in texts]


def _shorten(ids: list[int], budget: int, truncation: str) -> list[int]:
    if len(ids) <= budget:
        return ids
    if truncation == "left":
        return ids[len(ids) - budget :]
    head = budget // 4
    return ids[:head] + ids[len(ids) - (budget - head) :]


def tokenize_examples(
    examples: Sequence[Example],
    tokenizer: Any,
    *,
    max_len: int,
    max_target_len: int | None = None,
    pad_multiple: int = 16,
    eos_after_target: bool | None = None,
    truncation: str = "middle",
    pad_to_max: bool = False,
) -> TokenizedExamples:
    """Tokenise prompt + target of every example.

    max_len: most tokens of prompt + target; longer prompts are shortened (``truncation``:
        ``"middle"`` keeps the first quarter and the end, ``"left"`` keeps the end).
    max_target_len: cut longer targets (keeping EOS last); None keeps every target whole
        (an example whose target alone does not fit is an error).
    eos_after_target: append EOS to the target; None = for generation examples only.
    pad_to_max: pad to exactly max_len (and max_target_len) whatever the data, so that
        several sets share one shape.
    """
    if max_len < 2:
        raise ValueError(f"max_len must be at least 2, got {max_len}")
    if truncation not in ("middle", "left"):
        raise ValueError(f"truncation must be 'middle' or 'left', got {truncation!r}")
    m = len(examples)
    prompts = _encode_all(tokenizer, [e.input for e in examples])
    targets = _encode_all(tokenizer, [e.target for e in examples])
    eos = int(tokenizer.eos_id)
    pad = int(tokenizer.pad_id)

    rows_p: list[list[int]] = []
    rows_t: list[list[int]] = []
    truncated = np.zeros(m, bool)
    target_truncated = np.zeros(m, bool)
    for i, (ex, p, t) in enumerate(zip(examples, prompts, targets, strict=True)):
        add_eos = ex.label is None if eos_after_target is None else eos_after_target
        t = t + [eos] if add_eos else t
        if not t:
            raise ValueError(f"example {i} ({ex.source_id or ex.task}): empty target {ex.target!r}")
        if max_target_len is not None and len(t) > max_target_len:
            t = t[: max_target_len - 1] + [eos] if add_eos else t[:max_target_len]
            target_truncated[i] = True
        if len(t) > max_len - 1:
            raise ValueError(
                f"example {i} ({ex.source_id or ex.task}): the target has {len(t)} tokens, more "
                f"than max_len - 1 = {max_len - 1}; raise max_len or set max_target_len"
            )
        p = p or [eos]  # the first target token needs a position to be predicted from
        short = _shorten(p, max_len - len(t), truncation)
        truncated[i] = len(short) < len(p)
        rows_p.append(short)
        rows_t.append(t)

    p_len = np.array([len(p) for p in rows_p], np.int32)
    t_len = np.array([len(t) for t in rows_t], np.int32)
    longest = int((p_len + t_len).max()) if m else 1
    if pad_to_max:
        length, prompt_length = max_len, max_len
        s = target_bucket(max_target_len or int(t_len.max(initial=1)), pad_multiple)
    else:
        length = min(round_up(longest, pad_multiple), max(max_len, longest))
        prompt_length = min(round_up(int(p_len.max(initial=1)), pad_multiple), length)
        s = target_bucket(int(t_len.max(initial=1)), pad_multiple)

    input_ids = np.full((m, length), pad, np.int32)
    attention_mask = np.zeros((m, length), np.int32)
    target_pos = np.zeros((m, s), np.int32)
    target_ids = np.zeros((m, s), np.int32)
    target_mask = np.zeros((m, s), np.float32)
    prompt_ids = np.full((m, prompt_length), pad, np.int32)
    prompt_mask = np.zeros((m, prompt_length), np.int32)
    for i, (p, t) in enumerate(zip(rows_p, rows_t, strict=True)):
        seq = p + t
        input_ids[i, : len(seq)] = seq
        attention_mask[i, : len(seq)] = 1
        target_pos[i, : len(t)] = np.arange(len(p) - 1, len(p) - 1 + len(t))
        target_ids[i, : len(t)] = t
        target_mask[i, : len(t)] = 1.0
        prompt_ids[i, prompt_length - len(p) :] = p
        prompt_mask[i, prompt_length - len(p) :] = 1
    return TokenizedExamples(
        input_ids=input_ids,
        attention_mask=attention_mask,
        target_pos=target_pos,
        target_ids=target_ids,
        target_mask=target_mask,
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        prompt_len=p_len,
        target_len=t_len,
        truncated=truncated,
        target_truncated=target_truncated,
    )
