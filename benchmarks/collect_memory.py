"""What one collection group of the paper-scale config needs in accelerator memory, per task.

XLA's own estimate, from compiling the collection's programs for shape-only parameters of a
Pythia-410M-shaped model and the config's real pools: the group block (`group_block`: the
runs of a device vmapped, one AdamW step and the test-set evaluation) and, for the
generation tasks, the group's decoding (`lower_generate_runs`, `collect.generation_chunk`
test examples at a time). No weights are made, so it runs on a CPU in about 5 minutes for
every task. What it reads is each compiled program's buffer assignment:

    arguments (params + AdamW moments of every run, the tokens) + temporaries

with the outputs aliased to the donated arguments; the decoding adds the AdamW moments,
which stay on the device meanwhile. The buffer assignment is the compiler's of the platform
it runs on (the CPU unless JAX_PLATFORMS says otherwise); a GPU's differs in its fusions, so
read CPU figures as an estimate with some margin. They leave out what the runtime itself
holds.

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
import runpy
import time
from typing import Any

import numpy as np

from benchmarks.collect_paper_scale import PAPER_CONFIG, add_shape_args

GIB = 2**30


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="", help="comma-separated variants (default: all)")
    p.add_argument("--runs", default="4,8", help="runs per device to estimate")
    add_shape_args(p)
    p.add_argument(
        "--generation_chunk",
        type=int,
        default=None,
        help="collect.generation_chunk for the decoding tasks (default: the config's; 0: all)",
    )
    return p


def block_inputs(config: Any) -> tuple[dict, Any, list[list[int]]]:
    """(pool, test, prompts) as collection hands them on: the config's pools, Pythia-tokenized,
    with ``collect.eval_buckets`` the pool cut to its longest example and the test set in
    length buckets; and the test prompts the generation tasks decode."""
    from gptjax import paths
    from gptjax.collect.length_buckets import bucket_by_length, trim_to_longest
    from gptjax.models.tokenizer import load_tokenizer
    from gptjax.pipeline.config import collect_spec
    from gptjax.pipeline.preparation import build_config_pools
    from gptjax.tasks import tokenize_examples

    tokenizer = load_tokenizer(paths.pythia_tokenizer())
    pools = build_config_pools(config)
    pool_tokens, test_tokens = (
        tokenize_examples(examples, tokenizer, max_len=config.data.max_len)
        for examples in (pools.train, pools.test)
    )
    pool, test = pool_tokens.loss_inputs(), test_tokens.loss_inputs()
    buckets = collect_spec(config).eval_buckets
    if buckets:
        pool, test = trim_to_longest(pool), bucket_by_length(test, buckets)
    return pool, test, test_tokens.prompt_lists()


def estimate(
    config: Any, model_config: Any, runs: int, pool: dict, test: Any, prompts: list[list[int]]
) -> dict:
    """XLA's memory analysis of the group block with ``runs`` runs on one device (and of their
    decoding, for a config that decodes)."""
    import jax
    from flax import nnx
    from jax.sharding import Mesh

    from gptjax.collect.runner import group_block
    from gptjax.collect.train_step import Objective
    from gptjax.models.transformer import abstract_model
    from gptjax.pipeline.config import collect_spec

    spec = dataclasses.replace(collect_spec(config), runs_per_device=runs)
    if spec.train_layers or spec.compute_dtype != "float32":
        raise ValueError("estimates full fine-tuning in float32 (the paper config's) only")
    graphdef, params = nnx.split(abstract_model(model_config))
    _, optimizer = spec.optimizer()
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
    import jax

    from gptjax.models.config import pythia_style

    paper = runpy.run_path(str(PAPER_CONFIG))  # its TASKS and get_config
    tasks = [t for t in args.tasks.split(",") if t] or list(paper["TASKS"])
    unknown = [t for t in tasks if t not in paper["TASKS"]]
    if unknown:
        parser().error(f"--tasks: {', '.join(unknown)} not among {', '.join(paper['TASKS'])}")
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
        config = paper["get_config"](task)
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
        f"{peak(worst):.1f} GiB (XLA's {jax.devices()[0].platform} buffer assignment; see the "
        "docstring)"
    )
    rounded = [{k: round(v, 6) if isinstance(v, float) else v for k, v in r.items()} for r in rows]
    print(json.dumps({"rows": rounded, "largest_gib": round(peak(worst), 6)}))


if __name__ == "__main__":
    main()
