"""Target-token losses (the fine-tuning objective). Only target positions need logits: hidden
states are gathered there before the unembedding, which with a 50k vocabulary is most of the
saving."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from gptjax.models.transformer import Transformer
from gptjax.tasks.tokenize import TOKEN_FIELDS


def target_log_probs(
    model: Transformer,
    input_ids: jax.Array,
    attention_mask: jax.Array,
    target_pos: jax.Array,
    target_ids: jax.Array,
) -> jax.Array:
    """Per-token cross-entropy [B, S] of target_ids predicted at positions target_pos."""
    hidden, _ = model(input_ids, attention_mask=attention_mask)
    return _target_cross_entropy(model, hidden, target_pos, target_ids)


def _target_cross_entropy(model, hidden, target_pos, target_ids):
    gathered = jnp.take_along_axis(hidden, target_pos[..., None], axis=1)
    logits = model.unembed(gathered).astype(jnp.float32)
    return optax.softmax_cross_entropy_with_integer_labels(logits, target_ids)


def per_example_loss(
    model: Transformer,
    input_ids: jax.Array,
    attention_mask: jax.Array,
    target_pos: jax.Array,
    target_ids: jax.Array,
    target_mask: jax.Array,
) -> jax.Array:
    """Mean cross-entropy over each example's target tokens, shape [B]."""
    ce = target_log_probs(model, input_ids, attention_mask, target_pos, target_ids)
    return masked_token_mean(ce, target_mask)


def per_example_loss_from(
    model: Transformer,
    first_layer: int,
    residual: jax.Array,
    attention_mask: jax.Array,
    target_pos: jax.Array,
    target_ids: jax.Array,
    target_mask: jax.Array,
) -> jax.Array:
    """`per_example_loss` from the residual stream entering block ``first_layer`` (the
    cached output of a frozen prefix, `Transformer.residual_after`), shape [B]."""
    hidden = model.forward_from(residual, first_layer, attention_mask)
    ce = _target_cross_entropy(model, hidden, target_pos, target_ids)
    return masked_token_mean(ce, target_mask)


def masked_token_mean(ce: jax.Array, target_mask: jax.Array) -> jax.Array:
    """Mean of per-token losses over each example's target tokens (last axis); 0 for an
    example with none. Every per-example loss in the project reduces through this."""
    return (ce * target_mask).sum(-1) / jnp.maximum(target_mask.sum(-1), 1.0)


def batch_loss(model: Transformer, batch: dict[str, jax.Array]) -> jax.Array:
    """Mean over examples of the per-example target loss (the fine-tuning objective)."""
    return per_example_loss(model, *(batch[k] for k in TOKEN_FIELDS)).mean()
