"""GPTfluence (Chai, Liu et al., EMNLP 2024): the featurised n-th order simulator.

    ŷ_t = Σ_{j=1..n} α_j(c_t) · ŷ_{t-j} + β(c_t),   α_j, β reduced over the batch c_t
    dot:    α_j = Σ_{i∈c_t} ⟨F_j(h_i), F_j(h')⟩,   β = Σ_{i∈c_t} ⟨G(h_i), G(h')⟩
    concat: [α_1..α_n, β] = Σ_{i∈c_t} Heads(MLP([h_i; h']))

Gradient kernel (dot variant, ``kernel_dim = D > 0``): the last D feature columns are fixed
kernel features φ (the pipeline gives the base model's projected per-example loss gradients,
pool side centred), the MLPs read the others. With a mean batch reduction,

    α_1 = 1 + mean_{i∈c_t} ⟨F_1(h_i), F_1(h')⟩,   β = mean_{i∈c_t} ⟨G(h_i), G(h')⟩ + γ·u·⟨φ_i, φ'⟩

γ a learned scalar (starts at 1), u a fixed unit set by the fit (the least-squares scale,
``kernel_unit``), the MLPs' output layers start small. So the untrained model is the
first-order Taylor picture of fine-tuning: each step moves test loss by a multiple of its
batch's gradient inner products with the test example, accumulated over the curriculum
(a TracIn-style sum, ordered by the curriculum), and training learns corrections to it.

Both models expose the same two computations (see ``rollout.py`` for the table layout):

* ``table(train_feats, test_feats)`` → [n+1, P, N], used by the rollout, and
* ``transition_coefs(...)`` → [M, K, n+1] for M training windows of K steps.

Why they are cheap: for the dot variant F_j, G are evaluated once per *pool example* and once
per *test example* (not per transition and batch slot as in the reference), all n+1 MLPs in
one batched matmul; the batch reduction is a bilinear operation, so it is applied to the
factors (a count-matrix product) before the inner product. For the concat variant the first
layer is split into its train and test halves, so the only per-pair work is from the second
layer on.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .rollout import reduce_batch

INITS = ("torch", "flax")


def _generator(rngs: nnx.Rngs) -> np.random.Generator:
    # One key → a NumPy generator for every initial value: eager jax.random calls compile
    # once per shape (seconds per model on CPU); NumPy draws are immediate.
    seed = np.asarray(jax.random.key_data(rngs.params())).astype(np.uint64)
    return np.random.default_rng(seed)


def _kernel_init(
    gen: np.random.Generator, shape: tuple[int, ...], fan_in: int, init: str
) -> jax.Array:
    if init == "torch":
        # torch.nn.Linear: kaiming_uniform(a=√5) ⇒ U(±√(6/((1+5)·fan_in))) = U(±1/√fan_in).
        bound = 1.0 / math.sqrt(fan_in)
        return jnp.asarray(gen.uniform(-bound, bound, shape), jnp.float32)
    if init == "flax":  # lecun normal
        return jnp.asarray(gen.standard_normal(shape) / math.sqrt(fan_in), jnp.float32)
    raise ValueError(f"init must be one of {INITS}, got {init!r}")


def _bias_init(
    gen: np.random.Generator, shape: tuple[int, ...], fan_in: int, init: str
) -> jax.Array:
    if init == "torch":
        bound = 1.0 / math.sqrt(fan_in)
        return jnp.asarray(gen.uniform(-bound, bound, shape), jnp.float32)
    return jnp.zeros(shape, jnp.float32)


class StackedMLP(nnx.Module):
    """``heads`` independent MLPs din→hidden→ReLU→dout, evaluated as one batched matmul.

    Input [..., din] → output [..., heads, dout].
    """

    def __init__(
        self,
        heads: int,
        din: int,
        hidden: int,
        dout: int,
        *,
        init: str,
        rngs: nnx.Rngs,
        out_scale: float = 1.0,
    ):
        gen = _generator(rngs)
        self.w1 = nnx.Param(_kernel_init(gen, (heads, din, hidden), din, init))
        self.b1 = nnx.Param(_bias_init(gen, (heads, hidden), din, init))
        # out_scale < 1 starts the output near zero (a residual branch on a known model).
        w2 = _kernel_init(gen, (heads, hidden, dout), hidden, init)
        self.w2 = nnx.Param(w2 * out_scale)
        self.b2 = nnx.Param(_bias_init(gen, (heads, dout), hidden, init) * out_scale)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jnp.einsum("...d,jdh->...jh", x, self.w1[...]) + self.b1[...]
        h = jax.nn.relu(h)
        return jnp.einsum("...jh,jhk->...jk", h, self.w2[...]) + self.b2[...]


def count_matrix(ids: jax.Array, n_pool: int, batch_reduce: str) -> jax.Array:
    """[..., B] ids → [..., P] weights w so that reduce_{i∈batch} x_i = w @ x (ids < 0 skipped).

    Turning the batch gather-sum into a matmul keeps the backward pass a matmul too
    (a gather's transpose is a scatter-add, slow on CPU).
    """
    onehot = jax.nn.one_hot(ids, n_pool, dtype=jnp.float32)  # ids < 0 → all-zero row
    w = onehot.sum(axis=-2)
    if batch_reduce == "mean":
        w = w / jnp.maximum((ids >= 0).sum(-1, keepdims=True), 1).astype(jnp.float32)
    return w


# The MLPs' output layers start at this fraction of their usual size beside a gradient kernel.
KERNEL_MLP_OUT_SCALE = 0.01


class GPTfluenceDot(nnx.Module):
    """Dot variant: one MLP per α order plus one for β, shared by both sides of the product;
    with ``kernel_dim`` > 0 also the gradient-kernel term (see the module docstring)."""

    def __init__(
        self,
        order: int,
        din: int,
        hidden: int = 384,
        dout: int = 384,
        *,
        init: str = "torch",
        rngs: nnx.Rngs,
        kernel_dim: int = 0,
        kernel_unit: float = 1.0,
        mlp: bool = True,
    ):
        if not 0 <= kernel_dim < din:
            raise ValueError(
                f"kernel_dim must be in 0..{din - 1} (features: {din}), got {kernel_dim}"
            )
        if not (mlp or kernel_dim):
            raise ValueError("a GPTfluence model without MLPs needs the gradient kernel")
        self.order = order
        self.kernel_dim = kernel_dim
        self.kernel_unit = float(kernel_unit)  # static: part of the graph, not trained
        scale = KERNEL_MLP_OUT_SCALE if kernel_dim else 1.0
        # Without MLPs (kernel_mlp=False) the model is the kernel alone: one learned scale.
        self.mlp = (
            StackedMLP(
                order + 1, din - kernel_dim, hidden, dout, init=init, rngs=rngs, out_scale=scale
            )
            if mlp
            else None
        )
        if kernel_dim:
            self.kernel_scale = nnx.Param(jnp.ones((), jnp.float32))

    def _split(self, feats: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        if not self.kernel_dim:
            return feats, None
        return feats[..., : -self.kernel_dim], feats[..., -self.kernel_dim :]

    def _kernel_offsets(self, kernel: jax.Array, present: jax.Array) -> jax.Array:
        """[..., J] additions to the reduced coefficients from the (reduced) kernel values:
        ``present`` (1, or 0 for an all-empty batch, as a table reduction gives) on α_1,
        γ·u·kernel on β (with the mean reduction a table entry's offset passes through)."""
        gamma = self.kernel_scale[...] * self.kernel_unit
        zeros = jnp.zeros(kernel.shape + (self.order - 1,), kernel.dtype)
        return jnp.concatenate([present[..., None], zeros, (gamma * kernel)[..., None]], axis=-1)

    def table(self, train_feats: jax.Array, test_feats: jax.Array) -> jax.Array:
        train_feats, phi_p = self._split(train_feats)
        test_feats, phi_n = self._split(test_feats)
        if self.mlp is None:
            table = jnp.zeros((self.order + 1, phi_p.shape[0], phi_n.shape[0]), phi_p.dtype)
        else:
            fp = self.mlp(train_feats)  # [P, J, h]
            ft = self.mlp(test_feats)  # [N, J, h]
            table = jnp.einsum("pjh,njh->jpn", fp, ft)
        if phi_p is not None:
            kernel = phi_p @ phi_n.T
            table = table + jnp.moveaxis(self._kernel_offsets(kernel, jnp.ones_like(kernel)), -1, 0)
        return table

    def transition_coefs(
        self,
        train_feats: jax.Array,
        test_feats: jax.Array,
        ids: jax.Array,
        test_ids: jax.Array,
        batch_reduce: str,
        mode: str = "pool",
    ) -> jax.Array:
        """ids [M, K, B] (-1 = empty), test_ids [M] → reduced coefficients [M, K, J].

        ``mode="pool"`` evaluates the MLPs on every pool and test example once (cheaper when
        P + N is below the number of gathered rows, the usual case); ``"gather"`` on the
        gathered rows only (for very large pools).
        """
        train_feats, phi_p = self._split(train_feats)
        test_feats, phi_n = self._split(test_feats)
        if self.mlp is None:
            w = count_matrix(ids, phi_p.shape[0], batch_reduce)  # [M, K, P]
            kernel = jnp.einsum("mkp,pd,md->mk", w, phi_p, phi_n[test_ids])
            present = (ids >= 0).any(-1).astype(kernel.dtype)
            return self._kernel_offsets(kernel, present)
        if mode == "pool":
            fp = self.mlp(train_feats)  # [P, J, h]
            w = count_matrix(ids, train_feats.shape[0], batch_reduce)  # [M, K, P]
            s = jnp.einsum("mkp,pjh->mkjh", w, fp)
            # Test side: whichever is fewer rows, the whole test set or the M gathered ones.
            if test_feats.shape[0] <= test_ids.shape[0]:
                ft = self.mlp(test_feats)[test_ids]  # [M, J, h]
            else:
                ft = self.mlp(test_feats[test_ids])
            if phi_p is not None:
                phi_s = jnp.einsum("mkp,pd->mkd", w, phi_p)
        elif mode == "gather":
            rows = self.mlp(train_feats[jnp.maximum(ids, 0)])  # [M, K, B, J, h]
            mask = (ids >= 0)[..., None, None]
            s = reduce_batch(rows, mask, batch_reduce, axis=2)
            ft = self.mlp(test_feats[test_ids])
            if phi_p is not None:
                phi_s = reduce_batch(phi_p[jnp.maximum(ids, 0)], mask[..., 0], batch_reduce, 2)
        else:
            raise ValueError(f"mode must be 'pool' or 'gather', got {mode!r}")
        coefs = jnp.einsum("mkjh,mjh->mkj", s, ft)
        if phi_p is not None:
            kernel = jnp.einsum("mkd,md->mk", phi_s, phi_n[test_ids])
            present = (ids >= 0).any(-1).astype(coefs.dtype)
            coefs = coefs + self._kernel_offsets(kernel, present)
        return coefs


class GPTfluenceConcat(nnx.Module):
    """Concat variant: MLP([h_i; h']) 2d→hidden→ReLU→hidden2→ReLU, a linear head per α_j and β."""

    def __init__(
        self,
        order: int,
        din: int,
        hidden: int = 768,
        hidden2: int = 100,
        *,
        init: str = "torch",
        rngs: nnx.Rngs,
    ):
        self.order = order
        self.din = din
        j = order + 1
        gen = _generator(rngs)
        self.w1 = nnx.Param(_kernel_init(gen, (2 * din, hidden), 2 * din, init))
        self.b1 = nnx.Param(_bias_init(gen, (hidden,), 2 * din, init))
        self.w2 = nnx.Param(_kernel_init(gen, (hidden, hidden2), hidden, init))
        self.b2 = nnx.Param(_bias_init(gen, (hidden2,), hidden, init))
        # One head per output; stacked, which is the same as n+1 separate Linear(hidden2, 1).
        self.wh = nnx.Param(_kernel_init(gen, (hidden2, j), hidden2, init))
        self.bh = nnx.Param(_bias_init(gen, (j,), hidden2, init))

    def _halves(self, train_feats: jax.Array, test_feats: jax.Array):
        # W·[h_i; h'] = W_a·h_i + W_b·h': the first layer separates into a pool and a test part.
        w1 = self.w1[...]
        return train_feats @ w1[: self.din], test_feats @ w1[self.din :] + self.b1[...]

    def _pair(self, u: jax.Array, v: jax.Array) -> jax.Array:
        h = jax.nn.relu(u + v)
        h = jax.nn.relu(h @ self.w2[...] + self.b2[...])
        return h @ self.wh[...] + self.bh[...]

    def table(self, train_feats: jax.Array, test_feats: jax.Array, chunk: int = 32) -> jax.Array:
        u, v = self._halves(train_feats, test_feats)  # [P, H], [N, H]
        p = u.shape[0]
        pad = (-p) % chunk
        u = jnp.pad(u, ((0, pad), (0, 0))).reshape(-1, chunk, u.shape[1])
        # Chunks over the pool bound the [chunk, N, hidden] intermediate.
        out = jax.lax.map(lambda uc: self._pair(uc[:, None, :], v[None, :, :]), u)
        out = out.reshape(-1, v.shape[0], out.shape[-1])[:p]  # [P, N, J]
        return jnp.transpose(out, (2, 0, 1))

    def transition_coefs(
        self,
        train_feats: jax.Array,
        test_feats: jax.Array,
        ids: jax.Array,
        test_ids: jax.Array,
        batch_reduce: str,
        mode: str = "gather",
    ) -> jax.Array:
        del mode  # per-pair work is unavoidable; gathering constant features costs no backward
        u, v = self._halves(train_feats[jnp.maximum(ids, 0)], test_feats[test_ids])
        out = self._pair(u, v[:, None, None, :])  # [M, K, B, J]
        return reduce_batch(out, (ids >= 0)[..., None], batch_reduce, axis=2)
