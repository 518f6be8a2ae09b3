"""BLEU and ROUGE-L of generations, as an extra per-step evaluation during collection.

Greedy decoding by default: metrics of sampled outputs are noisy targets for a simulator.
With sampling, the key of run k at step t is fold_in(fold_in(root, k), t), so the numbers
are reproducible and independent of how runs are grouped.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gptjax.collect.runner import GroupModels
from gptjax.models.generate import generate_runs
from gptjax.models.tokenizer import Tokenizer
from gptjax.tasks.text_metrics import bleu, rouge_l
from gptjax.tasks.tokenize import TokenizedExamples


def make_generation_eval(
    test_tokens: TokenizedExamples,
    references: Sequence[Sequence[str]],
    tokenizer: Tokenizer,
    *,
    seed: int,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    chunk: int = 0,
):
    """extra_eval(models, step, runs) -> {bleu, rougeL: [G, N]}: the group's runs decode at
    once (vmapped; see `gptjax.collect.runner.ExtraEval`).

    references[n]: the reference texts of test example n. temperature 0 decodes greedily.
    chunk: decode this many test examples at a time (0: all at once). The KV cache of a chunk
    is what decoding holds, G runs x chunk x (prompt + new tokens) x layers; the tokens are
    the same either way (greedy rows do not depend on the batch, sampled rows draw with
    their index in the whole test set).
    """
    if chunk < 0:
        raise ValueError(f"collect.generation_chunk must be >= 0, got {chunk}")
    prompts = test_tokens.prompt_lists()
    references = [list(r) for r in references]
    root = jax.random.key(seed)

    def evaluate(models: GroupModels, step: int, runs: list[int]):
        keys = jnp.stack([jax.random.fold_in(jax.random.fold_in(root, run), step) for run in runs])
        size = chunk or len(prompts)
        texts_of_runs: list[list[str]] = [[] for _ in runs]
        for start in range(0, len(prompts), size):
            outs = generate_runs(
                models.graphdef,
                models.stacked,
                models.frozen,
                prompts[start : start + size],
                max_new_tokens,
                eos_id=tokenizer.eos_id,
                pad_id=tokenizer.pad_id,
                temperature=temperature,
                top_p=top_p,
                keys=keys,
                first_row=start,
            )
            for texts, out in zip(texts_of_runs, outs, strict=True):
                texts += [tokenizer.decode(ids) for ids in out.as_lists()]
        scores: dict[str, list[np.ndarray]] = {"bleu": [], "rougeL": []}
        for texts in texts_of_runs:
            scores["bleu"].append(bleu(texts, references))
            scores["rougeL"].append(rouge_l(texts, references))
        return {name: np.stack(values) for name, values in scores.items()}

    return evaluate
