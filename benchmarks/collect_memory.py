"""What one collection group of the paper-scale config needs in accelerator memory, per task.

XLA's own estimate, from compiling the collection's group block (`group_block`: the runs of
a device vmapped, one AdamW step and the test-set evaluation) for shape-only parameters of a
Pythia-410M-shaped model and the config's real pools: no weights are made, so it runs on a
CPU in a minute or two. What it reads is the compiled program's buffer assignment:

    arguments (params + AdamW moments of every run, the tokens) + temporaries

with the outputs aliased to the donated arguments. The buffer assignment is the CPU
compiler's; a GPU's differs in its fusions, so read the figures as an estimate with some
margin. They leave out the decoding of the generation tasks (`collect.generation_every`,
outside the block) and what the runtime itself holds.

    python -m benchmarks.collect_memory                       # every task, 4 and 8 runs
    python -m benchmarks.collect_memory --tasks boolq --runs 8
    python -m benchmarks.collect_memory --hidden_size 32 --num_layers 2 --num_heads 4  # tiny

Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "configs" / "paper_pythia410m.py"
GIB = 2**30


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="", help="comma-separated variants (default: all)")
    p.add_argument("--runs", default="4,8", help="runs per device to estimate")
    p.add_argument("--hidden_size", type=int, default=1024)
    p.add_argument("--num_layers", type=int, default=24)
    p.add_argument("--num_heads", type=int, default=16)
    p.add_argument("--data_root", default=None)
    p.add_argument(
        "--generation_chunk",
        type=int,
        default=None,
        help="collect.generation_chunk for the decoding tasks (default: the config's; 0: all)",
    )
    return p


def paper_config_module() -> Any:
    """configs/paper_pythia410m.py as a module (its TASKS and get_config)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_paper_config", CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def block_inputs(config: Any) -> tuple[dict, Any, list[list[int]]]:
    """(pool, test, prompts) as collection hands them on: the config's pools, Pythia-tokenized,
    the pool cut to its longest example, the test set in length buckets, and the test
    prompts the generation tasks decode."""
    from gptjax import paths
    from gptjax.collect.length_buckets import bucket_by_length, trim_to_longest
    from gptjax.models.tokenizer import load_tokenizer
    from gptjax.pipeline.config import collect_spec
    from gptjax.pipeline.preparation import build_config_pools
    from gptjax.tasks import tokenize_examples
    from gptjax.tasks.tokenize import TOKEN_FIELDS

    tokenizer = load_tokenizer(paths.pythia_tokenizer())
    pools = build_config_pools(config)
    pool_tokens, test_tokens = (
        tokenize_examples(examples, tokenizer, max_len=config.data.max_len)
        for examples in (pools.train, pools.test)
    )
    pool = trim_to_longest(pool_tokens.loss_inputs())
    pool = {k: np.asarray(v) for k, v in pool.items() if k in TOKEN_FIELDS}
    test = {k: np.asarray(test_tokens.loss_inputs()[k]) for k in TOKEN_FIELDS}
    buckets = collect_spec(config).eval_buckets
    prompts = [
        [int(t) for t, m in zip(row, mask, strict=True) if m]
        for row, mask in zip(test_tokens.prompt_ids, test_tokens.prompt_mask, strict=True)
    ]
    return pool, bucket_by_length(test, buckets) if buckets else test, prompts


def estimate(
    config: Any, model_config: Any, runs: int, pool: dict, test: Any, prompts: list[list[int]]
) -> dict:
    """XLA's memory analysis of the group block with ``runs`` runs on one device (and of their
    decoding, for a config that decodes)."""
    import jax
    from flax import nnx
    from jax.sharding import Mesh

    from gptjax.collect.runner import group_block
    from gptjax.collect.train_step import Objective, make_optimizer, make_schedule
    from gptjax.models.transformer import abstract_model
    from gptjax.pipeline.config import collect_spec

    spec = dataclasses.replace(collect_spec(config), runs_per_device=runs)
    if spec.train_layers or spec.compute_dtype != "float32":
        raise ValueError("estimates full fine-tuning in float32 (the paper config's) only")
    graphdef, params = nnx.split(abstract_model(model_config))
    schedule = make_schedule(spec.learning_rate, spec.num_steps, spec.warmup_steps, 0.0)
    optimizer = make_optimizer(
        schedule, b1=spec.b1, b2=spec.b2, eps=spec.eps, weight_decay=spec.weight_decay
    )
    opt_state = jax.eval_shape(optimizer.init, params)
    stacked = lambda tree: jax.tree.map(  # noqa: E731
        lambda a: jax.ShapeDtypeStruct((runs, *a.shape), a.dtype), tree
    )
    shapes = lambda tree: jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)  # noqa: E731
    mesh = Mesh(np.array(jax.devices()[:1]), ("runs",))
    block = group_block(spec, Objective(graphdef, 0, spec.compute_dtype), optimizer, mesh, True)
    t0 = time.perf_counter()
    compiled = block.lower(
        stacked(params),
        stacked(opt_state),
        jax.ShapeDtypeStruct((runs,), bool),
        jax.ShapeDtypeStruct((runs, 1, spec.batch_size), np.int32),
        shapes(pool),
        shapes(test),
        None,
    ).compile()
    m = compiled.memory_analysis()
    param_bytes = sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(params))
    row = {
        "runs_per_device": runs,
        "compile_s": round(time.perf_counter() - t0, 1),
        "param_gib": param_bytes / GIB,
        "argument_gib": m.argument_size_in_bytes / GIB,
        "temp_gib": m.temp_size_in_bytes / GIB,
        "estimate_gib": (
            m.argument_size_in_bytes
            + m.output_size_in_bytes
            - m.alias_size_in_bytes
            + m.temp_size_in_bytes
        )
        / GIB,
    }
    if config.collect.generation_every > 0 and prompts:
        row |= decode_estimate(config, graphdef, stacked(params), prompts, param_bytes * runs)
    return row


def decode_estimate(
    config: Any, graphdef: Any, stacked_params: Any, prompts: list[list[int]], group_bytes: int
) -> dict:
    """XLA's memory analysis of the group's decoding (`lower_generate_runs`: the KV cache of
    ``collect.generation_chunk`` test examples at a time, or all of them), plus the two AdamW
    moments that stay on the device meanwhile (``group_bytes`` each: the group's parameters)."""
    from gptjax.models.generate import lower_generate_runs

    c = config.collect
    chunk = c.generation_chunk or len(prompts)
    # The chunk of the longest prompts: the widest KV cache any chunk needs.
    longest = sorted(prompts, key=len)[-chunk:]
    lowered = lower_generate_runs(graphdef, stacked_params, longest, int(c.max_new_tokens))
    m = lowered.compile().memory_analysis()
    total = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
    return {
        "decode_chunk": chunk,
        "decode_temp_gib": m.temp_size_in_bytes / GIB,
        "decode_estimate_gib": (total + 2 * group_bytes) / GIB,
    }


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from gptjax.models.config import pythia_style

    module = paper_config_module()
    tasks = [t for t in args.tasks.split(",") if t] or list(module.TASKS)
    unknown = [t for t in tasks if t not in module.TASKS]
    if unknown:
        parser().error(f"--tasks: {', '.join(unknown)} not among {', '.join(module.TASKS)}")
    try:
        runs = [int(r) for r in args.runs.split(",")]
    except ValueError:
        runs = []
    if not runs or min(runs) < 1:
        parser().error(f"--runs must be comma-separated integers >= 1, got {args.runs!r}")
    model_config = pythia_style(
        hidden_size=args.hidden_size, num_layers=args.num_layers, num_heads=args.num_heads
    )
    rows = []
    header = (
        f"{'task':12s} {'pool len':>8s} {'test len':>8s} {'runs':>4s} {'args GiB':>9s} "
        f"{'temps GiB':>9s} {'step GiB':>9s} {'decode GiB':>10s}"
    )
    for task in tasks:
        config = module.get_config(task)
        if args.data_root:
            config.data.data_root = args.data_root
        if args.generation_chunk is not None:
            config.collect.generation_chunk = args.generation_chunk
        pool, test, prompts = block_inputs(config)
        parts = test["buckets"] if "buckets" in test else [test]
        test_len = max(int(b["input_ids"].shape[1]) for b in parts)
        for r in runs:
            row = {"task": task, "pool_len": int(pool["input_ids"].shape[1]), "test_len": test_len}
            row |= estimate(config, model_config, r, pool, test, prompts)
            if not rows:
                print(f"model: {row['param_gib'] * GIB / 4 / 1e6:.0f}M parameters (float32)")
                print(header)
            rows.append(row)
            decode = row.get("decode_estimate_gib")
            print(
                f"{task:12s} {row['pool_len']:8d} {test_len:8d} {r:4d} "
                f"{row['argument_gib']:9.2f} {row['temp_gib']:9.2f} {row['estimate_gib']:9.2f} "
                f"{'–' if decode is None else f'{decode:.2f}':>10s}",
                flush=True,
            )
    peak = lambda row: max(row["estimate_gib"], row.get("decode_estimate_gib", 0.0))  # noqa: E731
    worst = max(rows, key=peak)
    print(
        f"largest: {worst['task']} with {worst['runs_per_device']} runs per device, "
        f"{peak(worst):.1f} GiB (XLA's CPU buffer assignment; see the docstring)"
    )
    rounded = [{k: round(v, 6) if isinstance(v, float) else v for k, v in r.items()} for r in rows]
    print(json.dumps({"rows": rounded, "largest_gib": round(peak(worst), 6)}))


if __name__ == "__main__":
    main()
