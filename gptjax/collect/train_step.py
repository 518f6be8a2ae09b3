"""Pure, jittable fine-tuning and evaluation steps of one run; `collect` vmaps and shards them.

State is an nnx.State of the trained parameters plus an optax state; the model is rebuilt
from a fixed graphdef inside the step (nnx.merge), so the step is a function of arrays only
and can be vmapped over stacked runs. With partial fine-tuning the frozen parameters are a
second, unstacked argument, and the examples carry the frozen prefix's cached output
(``tokens[RESIDUAL]``) in place of their input ids.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from gptjax.models.losses import per_example_loss, per_example_loss_from
from gptjax.tasks.tokenize import TOKEN_FIELDS


def make_schedule(
    learning_rate: float, total_steps: int, warmup_steps: int = 0, end_factor: float = 0.0
) -> optax.Schedule:
    """Linear warm-up from 0 (optional) then linear decay to end_factor * lr at step T."""
    decay = optax.linear_schedule(
        learning_rate, learning_rate * end_factor, max(total_steps - warmup_steps, 1)
    )
    if warmup_steps <= 0:
        return decay
    warm = optax.linear_schedule(0.0, learning_rate, warmup_steps)
    return optax.join_schedules([warm, decay], [warmup_steps])


def make_optimizer(
    schedule: optax.Schedule, *, b1: float, b2: float, eps: float, weight_decay: float
) -> optax.GradientTransformation:
    return optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)


RESIDUAL = "residual"  # the cached residual stream entering the first trained block
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def cast_floats(tree: Any, dtype: Any) -> Any:
    """Floating leaves of ``tree`` as ``dtype`` (differentiable: the gradient flows back to the
    float32 master copy)."""
    return jax.tree.map(
        lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree
    )


@dataclasses.dataclass(frozen=True)
class Objective:
    """Per-example target losses of a run: ``objective(params, frozen, tokens) -> [B]``.

    first_layer: 0 for full fine-tuning; k > 0 when blocks below k (and the embedding) are
    frozen, ``params`` holds the rest, ``frozen`` the frozen part, and ``tokens[RESIDUAL]``
    the residual stream after block k-1. compute_dtype: the dtype of parameters and
    activations in the forward and backward passes (the master weights stay float32; logits
    and losses are float32).
    """

    graphdef: nnx.GraphDef
    first_layer: int = 0
    compute_dtype: str = "float32"

    def __call__(self, params: Any, frozen: Any, tokens: dict[str, jax.Array]) -> jax.Array:
        states = (params,) if frozen is None else (params, frozen)
        if self.compute_dtype != "float32":
            dtype = COMPUTE_DTYPES[self.compute_dtype]
            states = cast_floats(states, dtype)
            if RESIDUAL in tokens:
                tokens = {**tokens, RESIDUAL: tokens[RESIDUAL].astype(dtype)}
        model = nnx.merge(self.graphdef, *states)
        if self.first_layer:
            rest = (tokens[k] for k in TOKEN_FIELDS[1:])
            return per_example_loss_from(model, self.first_layer, tokens[RESIDUAL], *rest)
        return per_example_loss(model, *(tokens[k] for k in TOKEN_FIELDS))


def example_losses(graphdef: nnx.GraphDef, params: Any, tokens: dict[str, jax.Array]) -> jax.Array:
    """Per-example target losses [B] of the full model ``nnx.merge(graphdef, params)``."""
    return Objective(graphdef)(params, None, tokens)


def eval_losses(
    losses_of: Callable[[dict[str, jax.Array]], jax.Array],
    test_tokens: dict[str, jax.Array],
    chunk: int,
) -> jax.Array:
    """``losses_of(tokens) -> [B]`` over every test example, [N], `chunk` at a time."""
    n = next(iter(test_tokens.values())).shape[0]
    if n <= chunk:
        return losses_of(test_tokens)
    pad = -n % chunk
    padded = jax.tree.map(lambda a: jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1)), test_tokens)
    blocks = jax.tree.map(lambda a: a.reshape(-1, chunk, *a.shape[1:]), padded)
    return jax.lax.map(losses_of, blocks).reshape(-1)[:n]


def make_update(objective: Objective, optimizer: optax.GradientTransformation) -> Callable:
    """update(params, opt_state, batch, frozen=None) -> (params, opt_state, loss, finite,
    grads): one optimiser step on the mean target loss of ``batch``; ``finite`` says the loss
    and the gradient norm were finite; ``grads`` are taken before the step. The one training
    step of collection and of base-model pretraining."""

    def update(params, opt_state, batch, frozen=None):
        loss, grads = jax.value_and_grad(lambda p: objective(p, frozen, batch).mean())(params)
        finite = jnp.isfinite(loss) & jnp.isfinite(optax.global_norm(grads))
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, finite, grads

    return update


def make_run_block(
    objective: Objective,
    optimizer: optax.GradientTransformation,
    test_losses: Callable[[Any, Any, Any], jax.Array],
    *,
    evaluate: bool = True,
    tracin_dots: bool = False,
) -> Callable:
    """block(params, opt_state, alive, batch_ids [S, B], pool, test, frozen) for ONE run: S
    optimiser steps in one ``lax.scan`` (no host round trip between them), then, when
    ``evaluate``, the target loss of every test example.

    Returns (params, opt_state, alive, train_loss [S], alive_after [S], dots [S, N] or None,
    test_losses [N] or None). ``test_losses(params, frozen, test) -> [N]`` evaluates the test
    set (`collect` passes the length-bucketed evaluation). ``dots[s]`` (with
    ``tracin_dots``) is ⟨∇ mean batch loss, ∇ℓ_n⟩ at the parameters before step s, for
    every test example n at once: one forward-mode derivative of the test losses along the
    batch gradient — exactly the inner products TracIn-CP needs at every step, with no
    checkpoint stored. A run whose training loss, gradient norm or evaluation becomes
    non-finite is marked dead from that step on, and its values read NaN. Runs in a vmapped
    group are independent, so a dead run cannot
    affect the others and its parameters need not be frozen.
    """
    update = make_update(objective, optimizer)

    def block(params, opt_state, alive, batch_ids, pool, test, frozen):
        def one_step(carry, ids):
            params, opt_state, alive = carry
            batch = jax.tree.map(lambda a: a[ids], pool)
            before = params
            params, opt_state, loss, finite, grads = update(params, opt_state, batch, frozen)
            dots = None
            if tracin_dots:
                _, dots = jax.jvp(lambda p: test_losses(p, frozen, test), (before,), (grads,))
                finite = finite & jnp.all(jnp.isfinite(dots))
                dots = jnp.where(alive & finite, dots, jnp.nan)
            alive = alive & finite
            return (params, opt_state, alive), (loss, alive, dots)

        (params, opt_state, alive), (loss, alive_after, dots) = jax.lax.scan(
            one_step, (params, opt_state, alive), batch_ids
        )
        losses = None
        if evaluate:
            losses = test_losses(params, frozen, test)
            alive = alive & jnp.all(jnp.isfinite(losses))
            losses = jnp.where(alive, losses, jnp.nan)
            alive_after = alive_after.at[-1].set(alive)
        return params, opt_state, alive, loss, alive_after, dots, losses

    return block
