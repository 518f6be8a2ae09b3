"""Kronfluence (EK-FAC influence functions) on the PyTorch twin of a gptjax model, scored by
LDS on the same held-out runs as the simulators — a reference for the benchmark and tests,
never a dependency of the packages.

    scores = kronfluence_scores(model, pool_tokens, test_tokens, dampings, out_dir)
    result = lds_reference(scores, subsets, y_final, train_runs, test_runs)

score(i, n) is Kronfluence's pairwise score of pool example i on test example n (positive:
training on i lowers n's loss). Run k's predicted final loss is −Σ_{i∈S_k} score(i, n) with
S_k the run's training subset; the LDS is `gptjax.evaluation.lds` over the runs. The damping
(Kronfluence's regulariser; its default is far too small here, see PEERS.md) is chosen by
LDS on the *training* runs only, as the simulators choose theirs on validation runs.

Install (kronfluence declares torchvision, whose newest wheel pulls a CUDA torch):
``pip install --no-deps kronfluence==1.0.1 einconv`` (accelerate, einops, opt-einsum,
safetensors and tqdm are already in the test environment).
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gptjax.evaluation import lds

DAMPINGS = (1e-2, 1e-1, 1.0, 3.0, 10.0, 30.0)


def torch_twin(model: Any, **hf_kwargs: Any):
    """(TargetLM, hf_lm): the transformers twin of a gptjax Transformer (float32, eval),
    wrapped to return logits at the target positions only. ``hf_kwargs`` go to
    ``from_pretrained`` (e.g. ``attn_implementation="eager"``)."""
    from transformers import AutoModelForCausalLM

    from gptjax.models.hf_loading import save_hf_model
    from tests.reference.torch_tracin import target_module_class

    with tempfile.TemporaryDirectory() as tmp:
        save_hf_model(model, tmp)
        lm = AutoModelForCausalLM.from_pretrained(tmp, **hf_kwargs).float().eval()
    return target_module_class()(lm).eval(), lm


def token_dataset(tokens: Any):
    """A torch Dataset of (input_ids, attention_mask, target_pos, labels) rows."""
    import torch

    from tests.reference.torch_tracin import tensors

    return torch.utils.data.TensorDataset(*tensors(tokens))


def per_example_loss(model, batch, labels=None):
    """Our loss (mean cross-entropy over each example's target tokens), per example."""
    from tests.reference.torch_tracin import target_loss

    input_ids, attention_mask, target_pos, true_labels = batch
    logits = model(input_ids, attention_mask, target_pos)
    return target_loss(logits, true_labels if labels is None else labels), logits


def _task_class():
    import torch
    from kronfluence.task import Task

    class TargetTokenTask(Task):
        """Training loss and measurement: summed per-example target-token losses. For the
        (true-Fisher) factors the labels are sampled from the model's own predictions."""

        def compute_train_loss(self, batch, model, sample=False):
            loss, logits = per_example_loss(model, batch)
            if not sample:
                return loss.sum()
            # One forward pass (Kronfluence's hooks need it to require gradients): labels
            # drawn from the detached predictions, the loss on the same logits.
            with torch.no_grad():
                probs = torch.softmax(logits.detach().float(), dim=-1)
                drawn = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1)
                drawn = drawn.reshape(probs.shape[:-1])
                labels = torch.where(batch[3] == -100, batch[3], drawn)
            from tests.reference.torch_tracin import target_loss

            return target_loss(logits, labels).sum()

        def compute_measurement(self, batch, model):
            return per_example_loss(model, batch)[0].sum()

        # No get_attention_mask: the unembedding sees the target positions only (another
        # shape than the prompt's mask), so padded positions stay in the covariances.

    return TargetTokenTask


def kronfluence_scores(
    model: Any,
    pool_tokens: Any,
    test_tokens: Any,
    dampings: Sequence[float] = DAMPINGS,
    out_dir: str | Path | None = None,
    *,
    batch_size: int = 16,
) -> dict[float, np.ndarray]:
    """{damping: scores [P, N]}: EK-FAC factors fitted once on the pool at ``model``'s
    parameters (the runs' common starting point), then pairwise scores per damping."""
    import torch
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments

    logging.getLogger("kronfluence").setLevel(logging.WARNING)
    torch.manual_seed(0)
    twin, _ = torch_twin(model)
    task = _task_class()()
    twin = prepare_model(twin, task)
    train_ds, test_ds = token_dataset(pool_tokens), token_dataset(test_tokens)
    tmp = None
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory()
        out_dir = tmp.name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # GradScaler / CPU notices
            analyzer = Analyzer(
                analysis_name="kronfluence",
                model=twin,
                task=task,
                cpu=True,
                disable_tqdm=True,
                output_dir=str(out_dir),
            )
            analyzer.fit_all_factors(
                factors_name="ekfac",
                dataset=train_ds,
                per_device_batch_size=batch_size,
                factor_args=FactorArguments(strategy="ekfac"),
                overwrite_output_dir=True,
            )
            out = {}
            for damping in dampings:
                name = f"scores_{damping:g}"
                analyzer.compute_pairwise_scores(
                    scores_name=name,
                    factors_name="ekfac",
                    query_dataset=test_ds,
                    train_dataset=train_ds,
                    per_device_query_batch_size=batch_size,
                    per_device_train_batch_size=batch_size,
                    score_args=ScoreArguments(damping_factor=float(damping)),
                    overwrite_output_dir=True,
                )
                s = analyzer.load_pairwise_scores(name)["all_modules"]  # [N, P]
                out[float(damping)] = s.double().numpy().T.copy()
    finally:
        if tmp is not None:
            tmp.cleanup()
    return out


def saved_kronfluence_scores(
    out_dir: str | Path, dampings: Sequence[float] = DAMPINGS
) -> dict[float, np.ndarray] | None:
    """`kronfluence_scores`' result read back from the files Kronfluence left in ``out_dir``
    (None if any damping's scores are missing)."""
    from safetensors.numpy import load_file

    out = {}
    for damping in dampings:
        path = (
            Path(out_dir)
            / "kronfluence"
            / f"scores_scores_{damping:g}"
            / "pairwise_scores.safetensors"
        )
        if not path.is_file():
            return None
        out[float(damping)] = np.asarray(load_file(str(path))["all_modules"], np.float64).T.copy()
    return out


def predict_final(scores: np.ndarray, subsets: Sequence[np.ndarray], runs: Sequence[int]):
    """[R, N]: run k's predicted final loss −Σ_{i∈S_k} score(i, n) (up to a constant, which
    the rank correlation ignores)."""
    return np.stack([-scores[np.asarray(subsets[k], np.int64)].sum(axis=0) for k in runs])


def lds_reference(
    scores_by_reg: dict[float, np.ndarray],
    subsets: Sequence[np.ndarray],
    y_final: np.ndarray,
    train_runs: Sequence[int],
    test_runs: Sequence[int],
) -> dict:
    """Choose the regulariser by mean LDS on ``train_runs``, report LDS on ``test_runs``.

    y_final: [K, N] true final values of every run. Returns {"lds_mean", "lds_std", "reg",
    "train_lds": {reg: mean LDS on the training runs}, "per_example": [N]}."""
    train_lds = {}
    for reg, s in scores_by_reg.items():
        v = lds(predict_final(s, subsets, train_runs), y_final[list(train_runs)])
        train_lds[reg] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
    finite = {r: v for r, v in train_lds.items() if np.isfinite(v)}
    if not finite:
        return {"lds_mean": None, "lds_std": None, "reg": None, "train_lds": train_lds}
    reg = max(finite, key=finite.get)
    per = lds(predict_final(scores_by_reg[reg], subsets, test_runs), y_final[list(test_runs)])
    ok = per[np.isfinite(per)]
    return {
        "lds_mean": float(ok.mean()) if ok.size else None,
        "lds_std": float(ok.std()) if ok.size else None,
        "reg": reg,
        "train_lds": train_lds,
        "per_example": per.tolist(),
    }
