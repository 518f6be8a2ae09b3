r"""What saving the trained blocks costs a SmolLM2 collection: the protocol's WMT16 collection
(partial fine-tuning of the top 2 blocks, 24 steps, batch 4, 32 test examples of 96 tokens,
TracIn inner products at every step, test losses every 4 steps, no decoding) with and without
`smollm2_config(..., saved_blocks=True)`'s 10 block saves, in one process.

    python -m benchmarks.collect_saves [--runs 16] [--groups 1] [--variants nosave,save,split]

Variants: ``nosave``; ``save`` (the 10 saves, Orbax, synchronous: the step blocks also end
at every save step, 14 jitted blocks per run instead of 6, and 4 block shapes compile instead
of 1); ``split`` (the blocks end at the save steps but nothing is written: the cost of the
split alone). Each collects ``--groups`` groups of ``--runs`` vmapped runs into a temporary
store; a group's wall time includes its compilations in the first group.

Prints a table; the last line is JSON: {"runs", "groups", "walls": {variant: [s per group]},
"save_over_nosave": ratio of the last groups}.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

SAVE_STEPS = (2, 5, 7, 10, 12, 14, 17, 19, 22, 24)  # smollm2_config's, for 24 steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=16, help="runs per group (vmapped)")
    parser.add_argument("--groups", type=int, default=1)
    parser.add_argument("--variants", default="nosave,save")
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = set(variants) - {"nosave", "save", "split"}
    if unknown or args.runs < 1 or args.groups < 1:
        raise SystemExit(f"error: --variants {sorted(unknown)} unknown, or --runs/--groups < 1")

    from gptjax import paths
    from gptjax.collect import runner
    from gptjax.collect.runner import CollectSpec, collect
    from gptjax.models.gguf_loading import load_gguf
    from gptjax.store import RunStore
    from gptjax.tasks import build_pools, tokenize_examples

    model, tokenizer = load_gguf(paths.smollm2_gguf())
    pools = build_pools("wmt16_de_en", pool_size=64, unseen_size=0, test_size=32, seed=0)
    pool = tokenize_examples(pools.train, tokenizer, max_len=96).loss_inputs()
    test = tokenize_examples(pools.test, tokenizer, max_len=96).loss_inputs()
    writer = runner._CheckpointWriter
    real_save, real_close = writer.save, writer.close
    walls: dict[str, list[float]] = {}
    for variant in variants:
        if variant == "split":  # the blocks split at the save steps, nothing written
            writer.save, writer.close = (lambda *a, **k: None), (lambda self: None)
        else:
            writer.save, writer.close = real_save, real_close
        spec = CollectSpec(
            seed=0,
            num_runs=args.groups * args.runs,
            subset_size=32,
            batch_size=4,
            epochs=3,
            learning_rate=1e-4,
            runs_per_device=args.runs,
            eval_chunk=8,
            train_layers=2,
            eval_every=4,
            tracin_dots=True,
            save_steps=SAVE_STEPS if variant != "nosave" else (),
        )
        with tempfile.TemporaryDirectory() as tmp:
            store = RunStore(Path(tmp) / "runs")
            collect(store, spec, model, pool, test, pool_size=64, progress=False)
            walls[variant] = [
                json.loads(store.timing_file(g * args.runs).read_text())["wall_s"]
                for g in range(args.groups)
            ]
        print(
            f"{variant}: group walls {', '.join(f'{w:.1f} s' for w in walls[variant])}", flush=True
        )
    writer.save, writer.close = real_save, real_close

    print(f"\n| variant | s per group of {args.runs} runs (last group) | s per run-step |")
    print("|---|---|---|")
    for variant, w in walls.items():
        print(f"| {variant} | {w[-1]:.1f} | {w[-1] / (args.runs * 24):.3f} |")
    ratio = walls["save"][-1] / walls["nosave"][-1] if {"save", "nosave"} <= set(walls) else None
    print(
        json.dumps(
            {"runs": args.runs, "groups": args.groups, "walls": walls, "save_over_nosave": ratio}
        )
    )


if __name__ == "__main__":
    main()
