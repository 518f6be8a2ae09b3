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

    import dataclasses
    import runpy

    from gptjax import paths
    from gptjax.collect import runner
    from gptjax.collect.runner import collect
    from gptjax.models.gguf_loading import load_gguf
    from gptjax.pipeline.config import collect_spec
    from gptjax.store import RunStore
    from gptjax.tasks import build_pools, tokenize_examples

    model, tokenizer = load_gguf(paths.smollm2_gguf())
    pools = build_pools("wmt16_de_en", pool_size=64, unseen_size=0, test_size=32, seed=0)
    pool = tokenize_examples(pools.train, tokenizer, max_len=96).loss_inputs()
    test = tokenize_examples(pools.test, tokenizer, max_len=96).loss_inputs()
    # The WMT16 config's collection, save steps included (its decoding is not part of it).
    protocol = collect_spec(runpy.run_path("configs/smollm2_wmt16_de_en.py")["get_config"]())
    writer = runner._CheckpointWriter
    real_save, real_close = writer.save, writer.close
    walls: dict[str, list[float]] = {}
    for variant in variants:
        if variant == "split":  # the blocks split at the save steps, nothing written
            writer.save, writer.close = (lambda *a, **k: None), (lambda self: None)
        else:
            writer.save, writer.close = real_save, real_close
        spec = dataclasses.replace(
            protocol,
            num_runs=args.groups * args.runs,
            runs_per_device=args.runs,
            save_steps=protocol.save_steps if variant != "nosave" else (),
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
        print(f"| {variant} | {w[-1]:.1f} | {w[-1] / (args.runs * protocol.num_steps):.3f} |")
    ratio = walls["save"][-1] / walls["nosave"][-1] if {"save", "nosave"} <= set(walls) else None
    print(
        json.dumps(
            {"runs": args.runs, "groups": args.groups, "walls": walls, "save_over_nosave": ratio}
        )
    )


if __name__ == "__main__":
    main()
