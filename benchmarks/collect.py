"""Collection speed: gptjax vs a straightforward PyTorch loop (transformers GPTNeoXForCausalLM).

Same work in both: a Pythia-style model (d_model 256, 4 layers, vocab 50304) fine-tuned in
K=4 runs of T=24 steps of B=4 real SST-2 examples (subsets of 32 from a pool of 64, 3
epochs, AdamW with linear decay), evaluating the target loss of N=64 test examples after
every step and before the first. Same initial weights, same curricula, same CPU, one process.

    python -m benchmarks.collect [--data_root DIR]

Prints a table, then one JSON line: {"jax_s", "torch_s", "speedup", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data_root", default=None)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import torch
    from flax import nnx
    from transformers import AutoModelForCausalLM

    from benchmarks.torch_loop import torch_collect
    from gptjax import paths
    from gptjax.collect.curricula import draw_curriculum
    from gptjax.collect.runner import CollectSpec, collect
    from gptjax.collect.train_step import eval_losses, example_losses, make_schedule
    from gptjax.models.config import pythia_style
    from gptjax.models.hf_loading import save_hf_model
    from gptjax.models.tokenizer import load_tokenizer
    from gptjax.models.transformer import init_model
    from gptjax.store import RunStore
    from gptjax.tasks import build_pools, tokenize_examples

    torch.set_num_threads(args.threads)
    k_runs, batch, epochs, subset, pool_size, n_test = 4, 4, 3, 32, 64, 64
    pools = build_pools(
        "sst2",
        pool_size=pool_size,
        unseen_size=0,
        test_size=n_test,
        seed=0,
        data_root=args.data_root,
    )
    tok = load_tokenizer(paths.pythia_tokenizer())
    pool = tokenize_examples(pools.train, tok, max_len=64, pad_to_max=True).loss_inputs()
    test = tokenize_examples(pools.test, tok, max_len=64, pad_to_max=True).loss_inputs()
    model = init_model(pythia_style(), seed=0)
    spec = CollectSpec(
        seed=0,
        num_runs=k_runs,
        subset_size=subset,
        batch_size=batch,
        epochs=epochs,
        learning_rate=1e-4,
        runs_per_device=k_runs,
    )
    steps = spec.num_steps

    # --- gptjax -------------------------------------------------------------------------
    with tempfile.TemporaryDirectory() as workdir:
        start = time.perf_counter()
        runs = RunStore(Path(workdir) / "runs")
        collect(runs, spec, model, pool, test, pool_size=pool_size, progress=False)
        jax_s = time.perf_counter() - start
        print(f"gptjax collection: {jax_s:.1f} s", flush=True)
        jax_y = runs.load().metrics["loss"]
    graphdef, params = nnx.split(model)
    stacked = jax.tree.map(lambda a: jnp.broadcast_to(a, (k_runs, *a.shape)), params)
    test_j = {k: jnp.asarray(v) for k, v in test.items()}
    ev = jax.jit(
        jax.vmap(lambda p: eval_losses(lambda t: example_losses(graphdef, p, t), test_j, 64))
    )
    jax.block_until_ready(ev(stacked))
    start = time.perf_counter()
    for _ in range(5):
        jax.block_until_ready(ev(stacked))
    jax_eval_s = (time.perf_counter() - start) / 5 * (steps + 1)

    # --- PyTorch, straightforward -------------------------------------------------------
    with tempfile.TemporaryDirectory() as hf_dir:
        save_hf_model(model, hf_dir)
        base = AutoModelForCausalLM.from_pretrained(hf_dir).float()
    schedule = make_schedule(spec.learning_rate, steps)
    curricula = [
        draw_curriculum(
            0, k, candidates=np.arange(pool_size), subset_size=subset, batch_size=batch,
            epochs=epochs,
        )[1]
        for k in range(k_runs)
    ]  # fmt: skip
    start = time.perf_counter()
    reference = torch_collect(base, pool, test, curricula, spec, schedule)
    torch_s = time.perf_counter() - start
    torch_y, torch_eval_s = reference["y"], reference["eval_s"]

    max_diff = float(np.abs(jax_y - torch_y).max())
    rows = [
        ("gptjax (vmap over 4 runs, incl. compile)", jax_s, jax_eval_s / jax_s),
        ("PyTorch loop (transformers)", torch_s, torch_eval_s / torch_s),
    ]
    print(
        f"collection: K={k_runs} runs x T={steps} steps x B={batch}, N={n_test} test, "
        f"d_model 256, 4 layers, vocab 50304, {args.threads} threads"
    )
    print(f"{'implementation':45s} {'wall s':>8s} {'eval share':>11s}")
    for name, wall, share in rows:
        print(f"{name:45s} {wall:8.1f} {share:10.0%}")
    print(f"speedup {torch_s / jax_s:.2f}x;  max |loss(jax) - loss(torch)| = {max_diff:.2e}")
    print(
        json.dumps(
            {
                "jax_s": round(jax_s, 3),
                "torch_s": round(torch_s, 3),
                "speedup": round(torch_s / jax_s, 3),
                "jax_eval_share": round(jax_eval_s / jax_s, 3),
                "torch_eval_share": round(torch_eval_s / torch_s, 3),
                "max_abs_loss_diff": max_diff,
            }
        )
    )


if __name__ == "__main__":
    main()
