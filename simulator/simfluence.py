"""Simfluence-linear (Guu et al., 2023): free coefficients per (pool example, test example).

    ŷ_t[n] = (reduce_{i∈c_t} A[i, n]) · ŷ_{t-1}[n] + reduce_{i∈c_t} B[i, n]

A is stored as an offset from a persistence prior (A₀ = 1/B for a batch sum, 1 for a batch
mean; B₀ = 0): weight decay then shrinks towards "this example does nothing" rather than
towards α = 0 (which would send every trajectory to zero). An example that never occurs in a
training run keeps the prior: Simfluence cannot say anything about unseen examples.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from .rollout import reduce_batch


class SimfluenceLinear(nnx.Module):
    def __init__(
        self,
        n_pool: int,
        n_test: int,
        *,
        batch_size: int,
        batch_reduce: str = "sum",
        rngs: nnx.Rngs | None = None,
    ):
        del rngs  # deterministic initialisation; accepted for a uniform constructor
        self.order = 1
        self.a0 = 1.0 / batch_size if batch_reduce == "sum" else 1.0
        self.delta_a = nnx.Param(jnp.zeros((n_pool, n_test), jnp.float32))
        self.b = nnx.Param(jnp.zeros((n_pool, n_test), jnp.float32))

    def table_by_ids(self, train_ids: jax.Array, test_ids: jax.Array) -> jax.Array:
        """[2, len(train_ids), len(test_ids)]: rows of the (A, B) table."""
        a = self.a0 + self.delta_a[...][train_ids][:, test_ids]
        b = self.b[...][train_ids][:, test_ids]
        return jnp.stack([a, b])

    def transition_coefs(self, ids: jax.Array, test_ids: jax.Array, batch_reduce: str) -> jax.Array:
        """ids [M, K, B], test_ids [M] → [M, K, 2]."""
        safe = jnp.maximum(ids, 0)
        tid = test_ids[:, None, None]
        rows = jnp.stack([self.a0 + self.delta_a[...][safe, tid], self.b[...][safe, tid]], -1)
        return reduce_batch(rows, (ids >= 0)[..., None], batch_reduce, axis=2)
