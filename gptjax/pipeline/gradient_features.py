"""Example features from the base model's per-example loss gradients (``simulator.encoder =
"gradient"``): a TracIn / TRAK flavoured input for GPTfluence.

Each pool and test example's feature is ∇θ ℓ(z; θ₀), the gradient of its target-token loss at
the base model θ₀ (the parameters every run starts from), randomly projected to d dimensions
by `baselines.GradientEngine` (the baselines section's gradient settings; d =
``simulator.gradient_projection_dim``). Optionally whitened the TRAK way: with G [M, d] the
pool examples' projected gradients, every feature g is mapped to g (GᵀG + λ̄I)^(-1/2), so that
⟨φ_i, φ'⟩ = g_i (GᵀG + λ̄I)⁻¹ g'ᵀ, TRAK's score. λ̄ = λ · tr(GᵀG) / min(M, d), i.e. λ (the
config key ``simulator.gradient_whiten``; 0 = off) is in units of the mean of the
min(M, d) eigenvalues GᵀG can have non-zero, so that one value means the same for any model
or gradient scale. Last, both sides are divided by one scalar, the root mean square entry of
the pool features, so that GPTfluence's MLPs (initialised for inputs of order 1) see inputs of
order 1 whatever the gradients' scale; one scalar keeps the inner-product geometry.

This lives in the pipeline because it joins the library's model and tokens with the
baselines' gradient engine (the simulators may not import the baselines). The projected
gradients (the expensive part) are cached in the workdir, keyed by the model's parameters,
the token arrays and the gradient settings; whitening and scaling are recomputed (a d×d
eigendecomposition).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from baselines import GradConfig, GradientEngine
from gptjax.io import fingerprint
from simulator.features import cache_path, features_key, load_or_compute

# GradConfig fields that only size the work (chunks, memory), not the features: left out of
# the cache key so that another memory budget reuses the cache.
_NOT_IN_KEY = ("memory_budget_mb", "chunk_size")


def projected_gradients(
    model: nnx.Module,
    tokens: Mapping[str, np.ndarray],
    grad_config: GradConfig,
    first_layer: int = 0,
) -> np.ndarray:
    """float32 [M, d]: each example's projected loss gradient at ``model``'s parameters (its
    trained parameters only: blocks ``first_layer``.. and the final norm, when > 0)."""
    return _Projector(model, grad_config, first_layer)(tokens)


class _Projector:
    """Projects examples' loss gradients at one model with one `GradientEngine`, built on
    first use: its random projection matrices (up to 64 MB per weight matrix) are drawn once
    for both sides, and not at all when both are cached."""

    def __init__(self, model: nnx.Module, grad_config: GradConfig, first_layer: int = 0):
        if grad_config.projection_dim <= 0:
            raise ValueError("gradient features need projection_dim > 0 (a fixed feature size)")
        self.graphdef, self.state = nnx.split(model)
        self.grad_config, self.first_layer = grad_config, first_layer
        self._engine: GradientEngine | None = None

    def __call__(self, tokens: Mapping[str, np.ndarray]) -> np.ndarray:
        if self._engine is None:
            self._engine = GradientEngine(
                self.graphdef, self.state, self.grad_config, first_layer=self.first_layer
            )
        chunks = self._engine.features(self.state, tokens)
        return np.concatenate([np.asarray(f["proj"], np.float32)[:n] for n, f in chunks])


def _cache_target(
    cache_file: str | os.PathLike,
    model_key: str,
    tokens: Mapping[str, np.ndarray],
    grad_config: GradConfig,
    first_layer: int,
) -> Path:
    """``<cache_file>.<hash>.npy``, the hash covering the token arrays, the gradient settings,
    the trained blocks and the model's parameters (``model_key``, their fingerprint)."""
    settings = {
        "encoder": "gradient",
        "grad": {k: v for k, v in dataclasses.asdict(grad_config).items() if k not in _NOT_IN_KEY},
        "tokens": fingerprint(*(np.asarray(tokens[k]) for k in sorted(tokens))),
        "model": model_key,
    }
    if first_layer:  # absent for full fine-tuning, so that earlier caches stay valid
        settings["first_layer"] = int(first_layer)
    return cache_path(cache_file, features_key([], **settings))


def whitening(train: np.ndarray, lam: float) -> np.ndarray:
    """The symmetric [d, d] matrix (GᵀG + λ̄I)^(-1/2), G = ``train`` [M, d], λ̄ = λ · tr(GᵀG) /
    min(M, d) (see the module docstring). Computed in float64: GᵀG's small eigenvalues are
    what the damping acts on."""
    if not lam > 0:
        raise ValueError(f"whitening needs λ > 0, got {lam}")
    g = np.asarray(train, np.float64)
    evals, evecs = np.linalg.eigh(g.T @ g)
    evals = np.clip(evals, 0.0, None)  # GᵀG is PSD; round-off can make tiny ones negative
    damp = lam * evals.sum() / min(g.shape)
    if not damp > 0:
        raise ValueError("the training examples' gradients are all zero: nothing to whiten")
    return (evecs * (evals + damp) ** -0.5) @ evecs.T


def transform(
    train: np.ndarray, test: np.ndarray, whiten: float = 0.0, center: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) features from projected gradients: the training side centred on its mean
    with ``center``, whitened with ``whiten`` = λ > 0 by the training side's `whitening`, then
    both divided by the training side's root mean square entry."""
    train = np.asarray(train, np.float64)
    test = np.asarray(test, np.float64)
    if center:
        train = train - train.mean(0)
    if whiten:
        w = whitening(train, whiten)
        train, test = train @ w, test @ w
    scale = float(np.sqrt(np.mean(train**2)))
    if not scale > 0:
        raise ValueError("the training examples' gradient features are all zero")
    return (train / scale).astype(np.float32), (test / scale).astype(np.float32)


def gradient_features(
    cache_file: str | os.PathLike,
    model: nnx.Module,
    pool_tokens: Mapping[str, np.ndarray],
    test_tokens: Mapping[str, np.ndarray],
    grad_config: GradConfig,
    whiten: float = 0.0,
    center: bool = False,
    first_layer: int = 0,
) -> dict[str, np.ndarray]:
    """{"train": [P, d], "test": [N, d]} simulator features of the pool and test examples:
    cached projected gradients at ``model``, through `transform`. ``center=True`` gives the
    features of GPTfluence's gradient kernel (``gptfluence_kernel``, ``gradient_kernel``): the
    pool side centred on its mean, so that a batch moves a test example's loss only by how its
    examples differ from the pool's average, which the mean trajectory already holds."""
    # Each side computed once, cached with its sha256; the model's fingerprint (every
    # parameter hashed) and the engine are shared by the two sides.
    project = _Projector(model, grad_config, first_layer)
    model_key = fingerprint(*(np.asarray(p) for p in jax.tree.leaves(nnx.state(model, nnx.Param))))
    raw = {}
    for side, tokens in (("train", pool_tokens), ("test", test_tokens)):
        target = _cache_target(cache_file, model_key, tokens, grad_config, first_layer)
        raw[side] = load_or_compute(
            target, len(tokens["input_ids"]), lambda tokens=tokens: project(tokens)
        )
    train, test = transform(raw["train"], raw["test"], whiten, center)
    return {"train": train, "test": test}
