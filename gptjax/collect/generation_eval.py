"""BLEU and ROUGE-L of generations, as an extra per-step evaluation during collection.

Greedy decoding by default: metrics of sampled outputs are noisy targets for a simulator.
With sampling, the key of run k at step t is fold_in(fold_in(root, k), t), so the numbers
are reproducible and independent of how runs are grouped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import numpy as np
from flax import nnx

from gptjax.models.generate import generate
from gptjax.tasks import bleu, rouge_l

if TYPE_CHECKING:
    import ml_collections

    from gptjax.stages import Prepared


def make_generation_eval(config: ml_collections.ConfigDict, prep: Prepared):
    """extra_eval(graphdef, stacked_params [G, ...], step, runs) -> {bleu, rougeL: [G, N]}."""
    c = config.collect
    tokens = prep.test_tokens
    prompts = [
        [int(t) for t, m in zip(row, mask, strict=True) if m]
        for row, mask in zip(tokens.prompt_ids, tokens.prompt_mask, strict=True)
    ]
    references = [list(e.references) for e in prep.pools.test]
    tokenizer = prep.tokenizer
    root = jax.random.key(config.seed)

    def evaluate(graphdef: nnx.GraphDef, stacked: Any, step: int, runs: list[int]):
        host = jax.device_get(stacked)
        scores: dict[str, list[np.ndarray]] = {"bleu": [], "rougeL": []}
        for i, run in enumerate(runs):
            model = nnx.merge(graphdef, jax.tree.map(lambda a, i=i: a[i], host))
            key = jax.random.fold_in(jax.random.fold_in(root, run), step)
            out = generate(
                model,
                prompts,
                c.max_new_tokens,
                eos_id=tokenizer.eos_id,
                pad_id=tokenizer.pad_id,
                temperature=c.sampling_temperature,
                top_p=c.top_p,
                key=key if c.sampling_temperature > 0 else None,
            )
            texts = [tokenizer.decode(ids) for ids in out.as_lists()]
            scores["bleu"].append(bleu(texts, references))
            scores["rougeL"].append(rouge_l(texts, references))
        return {name: np.stack(values) for name, values in scores.items()}

    return evaluate
