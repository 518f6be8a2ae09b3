"""Per-example generation metrics: sentence BLEU (sacrebleu, 0-100) and ROUGE-L F (rouge-score).

Both take one hypothesis per example and a sequence of references per example, and return
a float32 array with one score per example.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np


@functools.lru_cache(maxsize=1)
def _bleu_metric():
    from sacrebleu.metrics import BLEU

    # effective_order: sentence-level BLEU without zero n-gram orders wiping the score out;
    # "exp" smoothing is sacrebleu's default for sentence_bleu.
    return BLEU(effective_order=True, smooth_method="exp")


@functools.lru_cache(maxsize=2)
def _rouge_scorer(use_stemmer: bool):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)


def _check(hypotheses: Sequence[str], references_list: Sequence[Sequence[str]]) -> None:
    if len(hypotheses) != len(references_list):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references_list)} reference lists")
    for i, refs in enumerate(references_list):
        if isinstance(refs, str) or len(refs) == 0:
            raise ValueError(f"example {i}: references must be a non-empty sequence of strings")


def bleu(hypotheses: Sequence[str], references_list: Sequence[Sequence[str]]) -> np.ndarray:
    """Sentence BLEU per example, 0-100 (sacrebleu, 13a tokenisation, exp smoothing)."""
    _check(hypotheses, references_list)
    metric = _bleu_metric()
    return np.array(
        [
            metric.sentence_score(h.strip(), [r.strip() for r in refs]).score
            for h, refs in zip(hypotheses, references_list, strict=True)
        ],
        np.float32,
    )


def rouge_l(
    hypotheses: Sequence[str],
    references_list: Sequence[Sequence[str]],
    *,
    use_stemmer: bool = True,
) -> np.ndarray:
    """ROUGE-L F-measure per example, 0-1 (rouge-score); the best over the references."""
    _check(hypotheses, references_list)
    scorer = _rouge_scorer(use_stemmer)
    out = np.zeros(len(hypotheses), np.float32)
    for i, (h, refs) in enumerate(zip(hypotheses, references_list, strict=True)):
        out[i] = max(scorer.score(r, h)["rougeL"].fmeasure for r in refs)
    return out
