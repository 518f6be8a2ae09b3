"""Give a freshly initialised base model the task's format before collection.

A model trained from scratch spends the first steps of every run learning the answer
format ("Answer: yes/no"); that shared curve then dwarfs what the individual training
examples do. Training it first on examples of the same task that share no facts with the
pools (the demo: another world of invented words) leaves the runs' dynamics to the
examples themselves, as with a real pretrained model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from gptjax.collect.train_step import Objective, make_optimizer, make_update
from gptjax.models.transformer import Transformer
from gptjax.tasks.tokenize import TOKEN_FIELDS


def pretrain_base(
    model: Transformer,
    tokens: dict[str, np.ndarray],
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    progress: bool = True,
) -> tuple[Transformer, float]:
    """Train `steps` AdamW steps on random batches of `tokens`; returns (model, last loss)."""
    graphdef, params = nnx.split(model)
    optimizer = make_optimizer(
        optax.constant_schedule(learning_rate), b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0
    )
    data = {k: jnp.asarray(tokens[k]) for k in TOKEN_FIELDS}

    update = make_update(Objective(graphdef), optimizer)

    @jax.jit
    def step(params, opt_state, ids):
        batch = jax.tree.map(lambda a: a[ids], data)
        params, opt_state, loss, _, _ = update(params, opt_state, batch)
        return params, opt_state, loss

    opt_state = optimizer.init(params)
    rng = np.random.default_rng([seed, 7])
    n = len(tokens["input_ids"])
    loss = jnp.nan
    for _ in tqdm(range(steps), desc="pretrain", unit="step", disable=not progress):
        ids = rng.choice(n, size=min(batch_size, n), replace=False)
        params, opt_state, loss = step(params, opt_state, jnp.asarray(ids))
    loss = float(loss)
    if not np.isfinite(loss):
        raise ValueError(
            f"pretraining the base model diverged (loss {loss}); lower model.pretrain_lr"
        )
    return nnx.merge(graphdef, params), loss
