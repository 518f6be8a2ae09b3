"""TRAK on the PyTorch twin of a gptjax model, scored by LDS on the same held-out runs as the
simulators — a reference for the benchmark and tests, never a dependency of the packages.

    scores = trak_scores(model, pool_tokens, test_tokens, lambdas, out_dir)
    result = lds_reference(scores, subsets, y_final, train_runs, test_runs)

Model output (TRAK's f): the margin log(p / (1 − p)) with p = exp(−ℓ), ℓ our loss (mean
cross-entropy over the target tokens; for a one-token label word p is its probability);
out-to-loss term 1 − p, as TRAK's classification outputs. Positive score: training on i
raises n's margin, i.e. lowers its loss; run k's predicted final loss is −Σ_{i∈S_k} score.
The ridge λ (``lambda_reg``; TRAK's default 0 leaves a singular matrix here, PEERS.md) is
chosen by LDS on the training runs only. One checkpoint: the base model, where every run
starts. TRAK runs on CPU in float32 (its defaults are CUDA and half precision), with the
BasicProjector, recreated per λ (``finalize_features`` frees its matrix).

Install (traker declares torchvision, whose newest wheel pulls a CUDA torch):
``pip install --no-deps traker==0.3.2``.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tests.reference.kronfluence_lds import lds_reference, predict_final, torch_twin

LAMBDAS = (1e-2, 1e-1, 1.0, 10.0, 30.0, 100.0, 1000.0)
__all__ = ["LAMBDAS", "lds_reference", "predict_final", "trak_scores"]


def _output_class():
    import torch
    from trak.modelout_functions import AbstractModelOutput

    from tests.reference.torch_tracin import target_loss

    class TargetMargin(AbstractModelOutput):
        def __init__(self) -> None:  # TRAK requires an __init__ of its own
            super().__init__()

        @staticmethod
        def _loss(model, weights, buffers, input_ids, target_pos, labels):
            logits = torch.func.functional_call(
                model, (weights, buffers), (input_ids, None, target_pos)
            )
            return target_loss(logits, labels)

        @staticmethod
        def get_output(model, weights, buffers, input_ids, attention_mask, target_pos, labels):
            # One example (no batch axis); no attention mask: right padding, causal attention.
            loss = TargetMargin._loss(
                model, weights, buffers, input_ids[None], target_pos[None], labels[None]
            )[0]
            p = torch.exp(-loss).clamp(max=1.0 - 1e-6)
            return (-loss - torch.log1p(-p)).sum()

        def get_out_to_loss_grad(self, model, weights, buffers, batch):
            input_ids, _, target_pos, labels = batch
            with torch.no_grad():
                loss = self._loss(model, weights, buffers, input_ids, target_pos, labels)
            return (1.0 - torch.exp(-loss)).clone().detach().unsqueeze(-1)

    return TargetMargin


def trak_scores(
    model: Any,
    pool_tokens: Any,
    test_tokens: Any,
    lambdas: Sequence[float] = LAMBDAS,
    out_dir: str | Path | None = None,
    *,
    proj_dim: int = 512,
    batch_size: int = 16,
    seed: int = 0,
) -> dict[float, np.ndarray]:
    """{λ: scores [P, N]} at ``model``'s parameters (gradients of every parameter but the
    input embedding, projected to ``proj_dim``). The pool is featurized once; per λ TRAK's
    own score computer re-finalizes the features with that ridge and scores the targets."""
    import torch
    from trak import TRAKer

    from tests.reference.torch_tracin import tensors

    logging.getLogger("TRAK").setLevel(logging.WARNING)
    # Eager attention: torch.func.vmap has no batching rule for CPU SDPA (slow fallback).
    twin, _ = torch_twin(model, attn_implementation="eager")
    grad_wrt = [n for n, _ in twin.named_parameters() if "embed_in" not in n]
    train = tensors(pool_tokens)
    test = tensors(test_tokens)
    n_train, n_test = train[0].shape[0], test[0].shape[0]
    ckpt = twin.state_dict()
    tmp = None
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory()
        out_dir = tmp.name
    save_dir = Path(out_dir) / "trak"
    if save_dir.exists():
        import shutil

        shutil.rmtree(save_dir)  # TRAK resumes from a save_dir: start clean
    out = {}
    try:
        traker = TRAKer(
            model=twin,
            task=_output_class()(),
            train_set_size=n_train,
            save_dir=str(save_dir),
            load_from_save_dir=True,  # (False skips creating experiments.json, which scoring needs)
            device="cpu",
            proj_dim=proj_dim,
            use_half_precision=False,
            projector_seed=seed,
            grad_wrt=grad_wrt,
            lambda_reg=float(lambdas[0]),
            logging_level=logging.WARNING,
        )
        traker.load_checkpoint(ckpt, model_id=0)
        for lo in range(0, n_train, batch_size):
            hi = min(lo + batch_size, n_train)
            traker.featurize([t[lo:hi] for t in train], inds=np.arange(lo, hi))
        for lam in lambdas:
            traker.score_computer.lambda_reg = float(lam)
            traker.saver.model_ids[0]["is_finalized"] = 0  # finalize again with this λ
            traker.finalize_features(model_ids=[0])
            traker.projector = _same_projector(traker, seed)  # freed by finalize_features
            name = f"test_{len(out)}"
            traker.start_scoring_checkpoint(name, ckpt, model_id=0, num_targets=n_test)
            for lo in range(0, n_test, batch_size):
                hi = min(lo + batch_size, n_test)
                traker.score([t[lo:hi] for t in test], inds=np.arange(lo, hi))
            s = traker.finalize_scores(exp_name=name, model_ids=[0])  # [P, N]
            out[float(lam)] = np.asarray(torch.as_tensor(s), np.float64).copy()
    finally:
        if tmp is not None:
            tmp.cleanup()
    return out


def saved_trak_scores(
    out_dir: str | Path, lambdas: Sequence[float] = LAMBDAS
) -> dict[float, np.ndarray] | None:
    """`trak_scores`' result read back from the score files TRAK left in ``out_dir`` (one per
    λ, in order; None if any is missing)."""
    out = {}
    for i, lam in enumerate(lambdas):
        path = Path(out_dir) / "trak" / "scores" / f"test_{i}.mmap"
        if not path.is_file():
            return None
        out[float(lam)] = np.asarray(np.load(path, mmap_mode="r"), np.float64).copy()
    return out


def _same_projector(traker, seed: int):
    """A new projector with the same seed and shape (the matrix is regenerated from it)."""
    from trak.projectors import BasicProjector

    old = traker.projector
    return BasicProjector(
        grad_dim=old.grad_dim,
        proj_dim=old.proj_dim,
        seed=seed,
        proj_type=old.proj_type,
        device="cpu",
        dtype=old.dtype,
        model_id=0,
    )
