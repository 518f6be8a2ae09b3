"""Collection at the paper's scale: a Pythia-410M-shaped GPT-NeoX (d_model 1024, 24 layers,
16 heads, vocabulary 50304; weights initialised in code, since no pretrained checkpoint is on
the machine) fine-tuned with the paper's protocol on real SST-2 examples: batch 4, sequences up
to 256 tokens, AdamW with linear decay from 1e-5, every test example's target loss after every
step (N = 200 by default). For an accelerator: two groups of ``--runs`` runs (vmapped) of
``--steps`` steps each are collected; the second group's seconds per run-step (after
compilation) project the paper's collection, 32 runs x 96 steps x 200 test examples.

Random weights change nothing in the work a step does (the same shapes, the same FLOPs), so the
timing stands for Pythia-410M's; the trajectories themselves are not a result (the attribution
experiments at this scale need the pretrained checkpoint, configs/paper_pythia410m.py).

    JAX_PLATFORMS=cuda python -m benchmarks.collect_paper_scale [--runs 8] [--steps 8]
    python -m benchmarks.collect_paper_scale --hidden_size 64 --num_layers 2 --num_heads 4 \
        --runs 2 --steps 2 --test 16        # a CPU-sized smoke run of the same code

Prints a table; the last line is JSON: {"fp32_s_per_run_step", "bf16_s_per_run_step",
"protocol_minutes", "bf16_max_abs_deviation", "tflops_per_s", ...}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.collect_llm import time_collect

PROTOCOL_RUNS, PROTOCOL_STEPS = 32, 96


def step_flops(num_params: int, train_tokens: int, eval_tokens: int) -> float:
    """Dense-matmul FLOPs of one run-step: forward + backward (6 per parameter and token) over
    the training batch, forward (2 per parameter and token) over the evaluated test tokens."""
    return 6.0 * num_params * train_tokens + 2.0 * num_params * eval_tokens


# The paper-scale config whose shapes the paper-scale benchmarks take.
PAPER_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "paper_pythia410m.py"


def add_shape_args(p: argparse.ArgumentParser) -> None:
    """The model-shape options of the paper-scale benchmarks (Pythia-410M's by default) and
    the data root."""
    p.add_argument("--hidden_size", type=int, default=1024)
    p.add_argument("--num_layers", type=int, default=24)
    p.add_argument("--num_heads", type=int, default=16)
    p.add_argument("--data_root", default=None)


def paper_shaped_model(hidden_size: int, num_layers: int, num_heads: int) -> tuple[Any, int]:
    """(a GPT-NeoX of Pythia's layout, weights initialised in code, and its parameter count):
    Pythia-410M's shape at d_model 1024, 24 layers, 16 heads."""
    import jax
    from flax import nnx

    from gptjax.models.config import pythia_style
    from gptjax.models.transformer import init_model

    cfg = pythia_style(hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads)
    model = init_model(cfg, seed=0)
    num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    return model, num_params


def sst2_inputs(
    pool_size: int, test_size: int, max_len: int, data_root: str | None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The loss inputs of real SST-2 pool and test examples (seed 0), Pythia-tokenized."""
    from gptjax import paths
    from gptjax.models.tokenizer import load_tokenizer
    from gptjax.tasks import build_pools, tokenize_examples

    tokenizer = load_tokenizer(paths.pythia_tokenizer())
    pools = build_pools(
        "sst2",
        pool_size=pool_size,
        unseen_size=0,
        test_size=test_size,
        seed=0,
        data_root=data_root,
    )
    return tuple(
        tokenize_examples(examples, tokenizer, max_len=max_len).loss_inputs()
        for examples in (pools.train, pools.test)
    )


def parser() -> argparse.ArgumentParser:
    """The command line (experiments/device_runs.py reads logged commands with it)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=8, help="runs per group (vmapped)")
    p.add_argument("--steps", type=int, default=8, help="steps per run")
    p.add_argument("--test", type=int, default=200, help="test examples evaluated every step")
    p.add_argument("--max_len", type=int, default=256)
    add_shape_args(p)
    p.add_argument("--eval_chunk", type=int, default=64)
    p.add_argument("--skip_bf16", action="store_true")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

    import jax

    from gptjax.collect.runner import CollectSpec

    model, num_params = paper_shaped_model(args.hidden_size, args.num_layers, args.num_heads)
    cfg = model.config
    pool, test = sst2_inputs(4 * args.steps, args.test, args.max_len, args.data_root)
    device = jax.devices()[0]
    print(
        f"model: {num_params / 1e6:.0f}M parameters (d_model {cfg.hidden_size}, "
        f"{cfg.num_layers} layers); {device.platform} ({device.device_kind}); "
        f"{len(test['input_ids'])} test examples, max_len {args.max_len}",
        flush=True,
    )

    spec = CollectSpec(
        seed=0,
        num_runs=2 * args.runs,
        subset_size=4 * args.steps,
        batch_size=4,
        epochs=1,
        learning_rate=1e-5,
        runs_per_device=args.runs,
        eval_chunk=args.eval_chunk,
    )
    rows = [time_collect(model, pool, "fp32, eval every step", spec, test)]
    if not args.skip_bf16:
        bf16_spec = dataclasses.replace(spec, compute_dtype="bfloat16")
        rows.append(time_collect(model, pool, "bf16 compute, fp32 weights", bf16_spec, test))
        rows[1]["deviation"] = float(np.nanmax(np.abs(rows[1]["y"] - rows[0]["y"])))

    # Tokens a run-step touches: the training batch at the pool's longest example (batches are
    # cut to it) and every test example at its own length (the length buckets trim padding).
    train_len = int(np.asarray(pool["attention_mask"]).sum(1).max())
    eval_tokens = int(np.asarray(test["attention_mask"]).sum())
    flops = step_flops(num_params, 4 * train_len, eval_tokens)
    print()
    print(f"{'configuration':32s} {'s/run-step':>10s} {'TFLOP/s':>8s} {'32x96 runs':>11s}")
    for row in rows:
        # The protocol at the measured N: compile once, then 32 x 96 run-steps at this rate.
        row["protocol_s"] = (
            row["overhead_s"] + PROTOCOL_RUNS * PROTOCOL_STEPS * row["s_per_run_step"]
        )
        row["tflops"] = flops / row["s_per_run_step"] / 1e12
        print(
            f"{row['name']:32s} {row['s_per_run_step']:10.4f} {row['tflops']:8.1f} "
            f"{row['protocol_s'] / 60:9.1f} min"
        )
    if len(rows) > 1:
        print(f"bf16 vs fp32 (same runs): max |dy| = {rows[1]['deviation']:.4f} nats")
    best = min(rows, key=lambda r: r["s_per_run_step"])
    result = {
        "device": f"{device.platform}:{device.device_kind}",
        "params_m": round(num_params / 1e6, 1),
        "n_test": len(test["input_ids"]),
        "runs_per_group": args.runs,
        "fp32_s_per_run_step": round(rows[0]["s_per_run_step"], 5),
        "fp32_tflops_per_s": round(rows[0]["tflops"], 2),
        "fp32_compile_overhead_s": round(rows[0]["overhead_s"], 1),
        # The accelerator's high-water mark after the fp32 row (None on a CPU); compare with
        # benchmarks.collect_memory's estimate for the same task and runs per device.
        "fp32_device_peak_gib": rows[0]["device_peak_gib"],
        "bf16_s_per_run_step": round(rows[1]["s_per_run_step"], 5) if len(rows) > 1 else None,
        "bf16_tflops_per_s": round(rows[1]["tflops"], 2) if len(rows) > 1 else None,
        "bf16_max_abs_deviation": round(rows[1]["deviation"], 5) if len(rows) > 1 else None,
        "protocol_minutes": round(best["protocol_s"] / 60, 2),
        "protocol_config": best["name"],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
