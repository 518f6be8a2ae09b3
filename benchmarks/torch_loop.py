"""The PyTorch reference of the collection benchmarks: a straightforward transformers + AdamW
loop, one run after another, evaluating every test example's target loss after every step.
Logits are computed at every position, as a transformers training loop does."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np


def target_losses(model, tokens: dict) -> torch.Tensor:  # noqa: F821
    """Mean target-token cross-entropy of each example [B] (the fine-tuning objective)."""
    import torch

    logits = model(input_ids=tokens["input_ids"].long(), attention_mask=tokens["attention_mask"])
    logits = logits.logits
    picked = torch.gather(
        logits, 1, tokens["target_pos"].long()[..., None].expand(-1, -1, logits.shape[-1])
    )
    ce = torch.nn.functional.cross_entropy(
        picked.transpose(1, 2), tokens["target_ids"].long(), reduction="none"
    )
    mask = tokens["target_mask"]
    return (ce * mask).sum(1) / mask.sum(1).clamp(min=1)


def torch_collect(
    model,
    pool: dict[str, np.ndarray],
    test: dict[str, np.ndarray],
    curricula: Sequence[np.ndarray],
    spec,
    schedule: Callable[[int], float],
    *,
    log: Callable[[str], None] = print,
) -> dict:
    """Fine-tune a copy of ``model`` (a transformers causal LM) along each curriculum [T, B]
    with AdamW (spec's hyper-parameters, lr = schedule(step)); returns {"y": [K, T+1, N],
    "eval_s": seconds evaluating, "step_s": [K, T] seconds of each run-step (training step
    and its evaluation)}."""
    import torch

    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    t_test = {k: torch.as_tensor(v) for k, v in test.items()}
    steps = len(curricula[0])
    y = np.zeros((len(curricula), steps + 1, len(test["input_ids"])), np.float32)
    step_s = np.zeros((len(curricula), steps))
    eval_s = 0.0
    start = time.perf_counter()
    for k, curriculum in enumerate(curricula):
        model.load_state_dict(base_state)
        model.train()
        opt = torch.optim.AdamW(
            model.parameters(),
            lr=spec.learning_rate,
            betas=(spec.b1, spec.b2),
            eps=spec.eps,
            weight_decay=spec.weight_decay,
        )
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: float(schedule(s)) / spec.learning_rate
        )
        for t in range(steps + 1):
            t0 = time.perf_counter()
            if t > 0:
                ids = curriculum[t - 1]
                batch = {key: torch.as_tensor(v[ids]) for key, v in pool.items()}
                loss = target_losses(model, batch).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
            e0 = time.perf_counter()
            with torch.no_grad():
                model.eval()
                y[k, t] = target_losses(model, t_test).numpy()
                model.train()
            eval_s += time.perf_counter() - e0
            if t > 0:
                step_s[k, t - 1] = time.perf_counter() - t0
        log(f"torch run {k}: {time.perf_counter() - start:.1f} s")
    model.load_state_dict(base_state)
    return {"y": y, "eval_s": eval_s, "step_s": step_s}
