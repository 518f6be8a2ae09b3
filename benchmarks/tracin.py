"""TracIn-CP scores: gptjax against Captum's TracInCP on the same model, in one process.

    python -m benchmarks.tracin                 # 64 train x 64 test, 3 checkpoints
    python -m benchmarks.tracin --train 16 --test 16 --captum-test-chunk 8
    python -m benchmarks.tracin --hidden-size 768 --num-layers 12 --num-heads 12 \
        --train 8 --test 8 --skip-captum --memory-budget-mb 2048      # Pythia-160M shape

A Pythia-style GPT-NeoX (d_model 256, 4 layers, vocabulary 50304; random weights, three
perturbed copies as checkpoints) scores every (training, test) pair: sequences of 64 tokens
with the loss on the last 4 target tokens. gptjax: GradientEngine (jitted vmap-grad for the
blocks, factorised embedding / unembedding). Captum: TracInCP on the same model converted to
transformers' PyTorch GPTNeoXForCausalLM (per-example gradients, ``sample_wise_grads_per_batch``
off: its batch trick covers Linear and Conv2d only), test examples fed one per batch (a test
batch of b costs b backward passes through the whole batch's graph) in chunks whose gradients
fit in memory (Captum holds every test gradient of every checkpoint). torch uses 2 threads.
Both produce the same scores (checked below). The table gives seconds and pairs per second;
the last line is JSON. gptjax is timed twice: the first call includes XLA compilation.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
import jax
import numpy as np
from flax import nnx

from baselines.grads import GradConfig, GradientEngine
from baselines.tracin import tracin_scores
from gptjax.models.config import pythia_style
from gptjax.models.transformer import init_model

LEARNING_RATES = (1e-4, 6e-5, 2e-5)


def token_batch(rng: np.random.Generator, m: int, length: int, targets: int, vocab: int) -> dict:
    """Right-padded sequences (lengths length-7..length); targets: the last real tokens."""
    ids = rng.integers(0, vocab, (m, length)).astype(np.int32)
    lens = rng.integers(length - 7, length + 1, m)
    mask = (np.arange(length)[None] < lens[:, None]).astype(np.int32)
    pos = np.stack([np.arange(n - targets - 1, n - 1) for n in lens]).astype(np.int32)
    return dict(
        input_ids=ids,
        attention_mask=mask,
        target_pos=pos,
        target_ids=np.take_along_axis(ids, pos + 1, 1),
        target_mask=np.ones((m, targets), np.float32),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", type=int, default=64)
    p.add_argument("--test", type=int, default=64)
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--targets", type=int, default=4)
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--num-layers", type=int, default=4)
    p.add_argument("--num-heads", type=int, default=4)
    p.add_argument("--projection-dim", type=int, default=0)
    p.add_argument("--factorize", default="vocab", choices=("none", "vocab", "all"))
    p.add_argument("--memory-budget-mb", type=float, default=4096)
    p.add_argument("--captum-batch-size", type=int, default=1, help="training batch size")
    p.add_argument("--captum-test-chunk", type=int, default=16, help="test examples per call")
    p.add_argument("--torch-threads", type=int, default=2)
    p.add_argument("--skip-captum", action="store_true")
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.torch_threads)
    cfg = pythia_style(
        vocab_size=50304,
        hidden_size=args.hidden_size,
        num_layers=args.num_layers,
        num_heads=args.num_heads,
    )
    graphdef, base = nnx.split(init_model(cfg, 0))
    rng = np.random.default_rng(0)
    states = [
        jax.tree.map(lambda x: x + 0.002 * rng.standard_normal(x.shape).astype(np.float32), base)
        for _ in LEARNING_RATES
    ]
    train = token_batch(rng, args.train, args.length, args.targets, cfg.vocab_size)
    test = token_batch(rng, args.test, args.length, args.targets, cfg.vocab_size)
    pairs = args.train * args.test
    n_params = sum(int(np.prod(np.shape(x))) for x in jax.tree.leaves(base))
    print(
        f"model: GPT-NeoX d_model {cfg.hidden_size}, {cfg.num_layers} layers, vocab 50304 "
        f"({n_params / 1e6:.1f}M params); "
        f"{args.train} train x {args.test} test, {len(states)} checkpoints, "
        f"L={args.length}, {args.targets} target tokens; jax {jax.__version__} "
        f"({jax.devices()[0].platform}), torch {torch.__version__} ({args.torch_threads} threads)"
    )

    engine = GradientEngine(
        graphdef,
        base,
        GradConfig(
            factorize=args.factorize,
            projection_dim=args.projection_dim,
            memory_budget_mb=args.memory_budget_mb,
        ),
    )
    variant = f"factorize={args.factorize}" + (
        f", projection_dim={args.projection_dim}" if args.projection_dim else ""
    )
    t0 = time.perf_counter()
    ours = tracin_scores(engine, states, LEARNING_RATES, train, test)
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = tracin_scores(engine, states, LEARNING_RATES, train, test)
    t_jax = time.perf_counter() - t0
    rows = [
        (f"gptjax ({variant}), first call incl. compile", t_first),
        (f"gptjax ({variant}), steady state", t_jax),
    ]

    t_captum = float("nan")
    err = float("nan")
    if not args.skip_captum:
        from transformers import AutoModelForCausalLM

        from gptjax.models.hf_loading import save_hf_model
        from tests.reference.torch_tracin import (
            captum_tracincp,
            target_module_class,
            torch_state_dict,
        )

        with tempfile.TemporaryDirectory() as tmp:
            save_hf_model(nnx.merge(graphdef, states[0]), tmp)
            lm = AutoModelForCausalLM.from_pretrained(tmp).eval()
        torch_states = [torch_state_dict(nnx.merge(graphdef, s), lm) for s in states]
        wrapper = target_module_class()(lm).eval()
        t0 = time.perf_counter()
        ref = captum_tracincp(
            wrapper,
            torch_states,
            LEARNING_RATES,
            train,
            test,
            batch_size=args.captum_batch_size,
            test_chunk=args.captum_test_chunk,
            test_batch_size=1,
        )
        t_captum = time.perf_counter() - t0
        err = float(np.abs(ours - ref).max() / np.abs(ref).max())
        rows.append(
            (
                f"Captum TracInCP (train batch {args.captum_batch_size}, "
                f"test chunks of {args.captum_test_chunk})",
                t_captum,
            )
        )

    width = max(len(r[0]) for r in rows)
    print(f"\n| {'method':<{width}} | seconds | pairs/s |")
    print(f"|{'-' * (width + 2)}|---------|---------|")
    for name, sec in rows:
        print(f"| {name:<{width}} | {sec:7.2f} | {pairs / sec:7.1f} |")
    print(f"\nmax |gptjax - Captum| / max |Captum| = {err:.2e}")
    result = {
        "jax_pairs_per_s": pairs / t_jax,
        "captum_pairs_per_s": pairs / t_captum,
        "speedup": t_captum / t_jax,
        "speedup_incl_compile": t_captum / t_first,
        "max_rel_diff": err,
    }
    print(json.dumps({k: round(v, 6) if np.isfinite(v) else None for k, v in result.items()}))


if __name__ == "__main__":
    main()
