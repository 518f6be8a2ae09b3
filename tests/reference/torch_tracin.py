"""The same TracIn scores by Captum on the equivalent transformers (PyTorch) model: the
reference for the parity tests and the benchmark. Imports torch and captum lazily; nothing in
the JAX path needs them.

Captum calls ``model(*batch[:-1])`` and ``loss_fn(output, batch[-1])``; :class:`TargetLM`
takes (input_ids, attention_mask, target_pos) and returns the logits at the target positions
only, and :func:`target_loss` is our per-example loss (mean cross-entropy over each example's
target tokens; the labels carry -100 where target_mask is 0). Captum's ``TracInCP`` then takes
per-example gradients one example at a time (``sample_wise_grads_per_batch=False``, which
requires a per-example loss with no ``reduction`` attribute), and its learning rate for a
checkpoint is what the checkpoint-loading function returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from baselines.grads import as_batch


def _torch():
    import torch

    return torch


def target_module_class():
    torch = _torch()

    class TargetLM(torch.nn.Module):
        """forward(input_ids, attention_mask, target_pos) -> logits [B, S, V] at the target
        positions, or [B, V] at the first target position with ``single_target`` (the form
        TracInCPFast needs: a final linear layer with 2-D input and output)."""

        def __init__(self, lm: Any, single_target: bool = False):
            super().__init__()
            self.lm = lm
            self.single_target = single_target

        def forward(self, input_ids, attention_mask, target_pos):
            hidden = self.lm.base_model(
                input_ids=input_ids, attention_mask=attention_mask
            ).last_hidden_state
            index = target_pos[..., None].expand(-1, -1, hidden.shape[-1])
            h = torch.gather(hidden, 1, index)
            if self.single_target:
                h = h[:, 0]
            return self.lm.get_output_embeddings()(h)

    return TargetLM


def target_loss(logits, labels):
    """Per-example mean cross-entropy over the target tokens; labels -100 are left out."""
    torch = _torch()
    ce = torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), labels, reduction="none", ignore_index=-100
    )
    real = (labels != -100).to(ce.dtype)
    return (ce * real).sum(1) / real.sum(1).clamp(min=1.0)


def tensors(batch: Any, single_target: bool = False) -> tuple:
    """(input_ids, attention_mask, target_pos, labels) as torch tensors."""
    torch = _torch()
    b = as_batch(batch)
    labels = np.where(b["target_mask"] > 0, b["target_ids"], -100).astype(np.int64)
    if single_target:
        labels = labels[:, 0]
    return (
        torch.tensor(b["input_ids"], dtype=torch.long),
        torch.tensor(b["attention_mask"], dtype=torch.long),
        torch.tensor(b["target_pos"], dtype=torch.long),
        torch.tensor(labels),
    )


def dataset(batch: Any, single_target: bool = False):
    return _torch().utils.data.TensorDataset(*tensors(batch, single_target))


def torch_state_dict(jax_model: Any, torch_lm: Any) -> dict:
    """The transformers state dict holding a gptjax model's parameters."""
    torch = _torch()
    from gptjax.models.hf_loading import ALIASES, iter_hf_tensors

    keys = set(torch_lm.state_dict())
    out = {}
    for name, value in iter_hf_tensors(jax_model):
        if name not in keys and ALIASES.get(name) in keys:
            name = ALIASES[name]
        out[name] = torch.tensor(np.asarray(value))
    missing = {k for k in keys if k not in out}
    # Buffers (rotary tables, masks) are not parameters; keep the model's own.
    for k in missing:
        out[k] = torch_lm.state_dict()[k]
    return out


def checkpoint_loader(states: dict[str, dict], learning_rates: dict[str, float]):
    """Captum's checkpoints_load_func: load the named state dict, return its learning rate."""

    def load(model, name: str) -> float:
        model.lm.load_state_dict(states[name])
        return float(learning_rates[name])

    return load


def _tracin_cp(
    wrapper: Any,
    states: Sequence[dict],
    learning_rates: Sequence[float],
    train: Any,
    batch_size: int,
) -> Any:
    """Captum's TracInCP over our checkpoints (each load returns its learning rate)."""
    from captum.influence import TracInCP

    names = [f"ckpt{i}" for i in range(len(states))]
    return TracInCP(
        wrapper,
        dataset(train),
        checkpoints=names,
        checkpoints_load_func=checkpoint_loader(
            dict(zip(names, states, strict=True)), dict(zip(names, learning_rates, strict=True))
        ),
        loss_fn=target_loss,
        batch_size=batch_size,
        sample_wise_grads_per_batch=False,
    )


def captum_tracincp(
    wrapper: Any,
    states: Sequence[dict],
    learning_rates: Sequence[float],
    train: Any,
    test: Any,
    *,
    batch_size: int = 8,
    test_chunk: int | None = None,
    test_batch_size: int | None = None,
) -> np.ndarray:
    """[M, N] TracInCP scores by Captum (its [test, train] output transposed). Test examples
    go in chunks of ``test_chunk`` (Captum holds every test gradient of every checkpoint),
    each given as one batch, or as a DataLoader of ``test_batch_size`` batches (Captum
    computes a batch's per-example gradients by one backward pass per example through the
    whole batch's graph, so small batches waste less)."""
    torch = _torch()
    tracin = _tracin_cp(wrapper, states, learning_rates, train, batch_size)
    test_t = tensors(test)
    n = test_t[0].shape[0]
    chunk = test_chunk or n
    parts = []
    for i in range(0, n, chunk):
        part = tuple(t[i : i + chunk] for t in test_t)
        if test_batch_size:
            part = torch.utils.data.DataLoader(
                torch.utils.data.TensorDataset(*part), batch_size=test_batch_size
            )
        parts.append(tracin.influence(part).detach().numpy())
    return np.concatenate(parts, axis=0).T


def captum_self_influence(
    wrapper: Any,
    states: Sequence[dict],
    learning_rates: Sequence[float],
    train: Any,
    *,
    batch_size: int = 8,
) -> np.ndarray:
    """[M] TracInCP self-influence by Captum."""
    tracin = _tracin_cp(wrapper, states, learning_rates, train, batch_size)
    return tracin.self_influence().detach().numpy()


def captum_tracincp_fast(
    wrapper: Any,
    states: Sequence[dict],
    learning_rates: Sequence[float],
    train: Any,
    test: Any,
    *,
    batch_size: int = 8,
) -> np.ndarray:
    """[M, N] TracInCPFast scores (gradients of the final linear layer only) by Captum, for
    examples with one target token each (``wrapper`` built with ``single_target=True``)."""
    torch = _torch()
    from captum.influence import TracInCPFast

    names = [f"ckpt{i}" for i in range(len(states))]
    tracin = TracInCPFast(
        wrapper,
        final_fc_layer=wrapper.lm.get_output_embeddings(),
        train_dataset=dataset(train, single_target=True),
        checkpoints=names,
        checkpoints_load_func=checkpoint_loader(
            dict(zip(names, states, strict=True)), dict(zip(names, learning_rates, strict=True))
        ),
        loss_fn=torch.nn.CrossEntropyLoss(reduction="sum"),
        batch_size=batch_size,
    )
    return tracin.influence(tensors(test, single_target=True)).detach().numpy().T
