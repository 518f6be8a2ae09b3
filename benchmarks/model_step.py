"""One AdamW training step of a Pythia-style model: gptjax (JAX/Flax NNX) vs transformers
(PyTorch), on the same CPU threads (or, with ``--device gpu``, the same GPU), in one process.

Model: pythia_style() (GPT-NeoX, d_model 256, 4 layers, 4 heads, vocab 50304; other shapes with
--hidden_size / --num_layers / --num_heads). Batch 8 x 128
tokens; the loss covers the last 16 tokens of each sequence (a fine-tuning target). Both sides:
forward + backward + AdamW update (lr 1e-4, weight decay 0.01), the same initial weights.

gptjax gathers the hidden states at the 16 target positions before the unembedding, so its
50304 x 256 output matmul runs at 128 of the 1024 positions; transformers' GPTNeoXForCausalLM
computes logits everywhere (as its training loop does). The table also times transformers with
``logits_to_keep=17``, which restricts its unembedding the same way, for an apples-to-apples
ratio. FLOPs are counted per side for what runs (see ``step_flops``); the peak is the faster of
a jitted jax and a torch 2048^3 float32 matmul (8192^3 on a GPU), timed in the same run.

Usage: python -m benchmarks.model_step [--steps 10] [--threads 2]
       JAX_PLATFORMS=cuda python -m benchmarks.model_step --device gpu --hidden_size 768 \
           --num_layers 12 --num_heads 12          # Pythia-160M shape, both sides on the GPU
The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

BATCH, SEQ, TARGETS = 8, 128, 16


def pin_threads(threads: int) -> None:
    # XLA's CPU client sizes its thread pool from the CPUs this process may run on, so pinning
    # the process (before jax starts) is how jax gets `threads` threads; torch is told directly.
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < threads:
        sys.exit(f"asked for {threads} threads but only {len(cpus)} CPUs are available")
    os.sched_setaffinity(0, set(cpus[:threads]))


def step_flops(cfg, tokens: int, unembed_positions: int) -> dict[str, float]:
    """Matmul FLOPs of forward + backward (backward = 2x forward), by part.

    Dense layers: 6 x params x tokens. Attention scores and the weighted sum: 2 matmuls of
    2 x L x L x d per sequence and layer, forward; the full L x L square is computed (the causal
    mask is applied after), so it is all counted. Unembedding: 6 x V x d at the positions where
    logits are computed. The input embedding is a gather (no FLOPs).
    """
    d, layers = cfg.hidden_size, cfg.num_layers
    dense_params = layers * (d * 3 * d + d * d + 2 * d * cfg.intermediate_size)
    seqs = tokens // SEQ
    return {
        "dense": 6.0 * dense_params * tokens,
        "attention": 3.0 * layers * seqs * 2 * (2.0 * SEQ * SEQ * d),
        "unembed": 6.0 * cfg.vocab_size * d * unembed_positions,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per framework")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--device",
        default="cpu",
        choices=("cpu", "gpu"),
        help="gpu: JAX on its default accelerator and torch on cuda (both sides on the GPU)",
    )
    parser.add_argument("--hidden_size", type=int, default=256)
    parser.add_argument("--num_layers", type=int, default=4)
    parser.add_argument("--num_heads", type=int, default=4)
    args = parser.parse_args()
    if args.device == "cpu":  # on a GPU, XLA's compiler and autotuner want every core
        pin_threads(args.threads)
    started = time.perf_counter()
    if args.device == "cpu":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    import torch
    from flax import nnx
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from gptjax.models.config import pythia_style, to_hf_config
    from gptjax.models.hf_loading import ALIASES, iter_hf_tensors
    from gptjax.models.losses import per_example_loss
    from gptjax.models.transformer import init_model

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    cfg = pythia_style(
        hidden_size=args.hidden_size, num_layers=args.num_layers, num_heads=args.num_heads
    )
    dev = torch.device("cuda" if args.device == "gpu" else "cpu")

    def sync() -> None:  # torch's GPU calls return before the work is done
        if dev.type == "cuda":
            torch.cuda.synchronize()

    model = init_model(cfg, seed=0)

    rng = np.random.default_rng(0)
    ids = rng.integers(0, cfg.vocab_size, size=(BATCH, SEQ)).astype(np.int32)
    # Predict the last TARGETS tokens: logits at positions SEQ-17 .. SEQ-2.
    target_pos = np.broadcast_to(np.arange(SEQ - TARGETS - 1, SEQ - 1), (BATCH, TARGETS))
    batch = {
        "input_ids": jnp.asarray(ids),
        "attention_mask": jnp.ones((BATCH, SEQ), jnp.int32),
        "target_pos": jnp.asarray(target_pos, jnp.int32),
        "target_ids": jnp.asarray(ids[:, SEQ - TARGETS :]),
        "target_mask": jnp.ones((BATCH, TARGETS), jnp.float32),
    }

    # ---- JAX: a pure jitted step of (params, opt_state, batch); buffers donated.
    tx = optax.adamw(1e-4, weight_decay=0.01)
    graphdef, params = nnx.split(model, nnx.Param)
    opt_state = tx.init(params)

    def loss_fn(p, b):
        m = nnx.merge(graphdef, p)
        losses = per_example_loss(
            m, b["input_ids"], b["attention_mask"], b["target_pos"], b["target_ids"],
            b["target_mask"],
        )  # fmt: skip
        return losses.mean()

    def _step(p, s, b):
        loss, grads = jax.value_and_grad(loss_fn)(p, b)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    jax_step = jax.jit(_step, donate_argnums=(0, 1))

    # ---- PyTorch: transformers' model with the same weights, torch.optim.AdamW.
    tmodel = GPTNeoXForCausalLM(GPTNeoXConfig(**to_hf_config(cfg))).float()
    names = set(tmodel.state_dict())
    weights = {
        (k if k in names else ALIASES.get(k, k)): torch.from_numpy(np.array(v))
        for k, v in iter_hf_tensors(model)
    }
    missing, unexpected = tmodel.load_state_dict(weights, strict=False)
    if [m for m in missing if "rotary" not in m] or unexpected:
        sys.exit(f"weight transfer failed: missing {missing}, unexpected {unexpected}")
    tmodel.to(dev).train()
    print(f"models built ({time.perf_counter() - started:.1f} s)", flush=True)
    topt = torch.optim.AdamW(tmodel.parameters(), lr=1e-4, weight_decay=0.01)
    t_ids = torch.tensor(ids, dtype=torch.long, device=dev)
    labels = torch.full((BATCH, SEQ), -100, dtype=torch.long, device=dev)
    labels[:, SEQ - TARGETS :] = t_ids[:, SEQ - TARGETS :]

    def torch_step(keep: int | None):
        topt.zero_grad(set_to_none=True)
        if keep is None:
            out = tmodel(input_ids=t_ids, labels=labels)
            loss = out.loss
        else:
            logits = tmodel(input_ids=t_ids, logits_to_keep=keep).logits  # last `keep` positions
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]),
                labels[:, SEQ - keep + 1 :].reshape(-1),
            )
        loss.backward()
        topt.step()
        return loss.item()

    # Same starting loss on both sides (same weights, same targets) before any update.
    # The check runs in full float32 on both sides; on a GPU both then time with TF32 matmuls
    # (JAX's default there; torch's opt-in), so neither side gets the cheaper arithmetic alone.
    torch.backends.cuda.matmul.allow_tf32 = False
    with torch.no_grad():
        t_loss0 = float(tmodel(input_ids=t_ids, labels=labels).loss)
    with jax.default_matmul_precision("highest"):
        j_loss0 = float(jax.jit(loss_fn)(params, batch))
    torch.backends.cuda.matmul.allow_tf32 = dev.type == "cuda"
    assert abs(t_loss0 - j_loss0) < 1e-3, (t_loss0, j_loss0)

    # ---- Peak: a jitted float32 matmul on the same threads (8192^3 on a GPU).
    n = 8192 if args.device == "gpu" else 2048
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    mm = jax.jit(lambda x, y: x @ y)

    ta, tb = (torch.from_numpy(np.asarray(x)).to(dev) for x in (a, b))

    def time_matmul() -> float:
        t0 = time.perf_counter()
        mm(a, b).block_until_ready()
        return time.perf_counter() - t0

    def time_torch_matmul() -> float:
        t0 = time.perf_counter()
        torch.mm(ta, tb)
        sync()
        return time.perf_counter() - t0

    state = {"p": params, "s": opt_state}

    def time_jax() -> float:
        t0 = time.perf_counter()
        state["p"], state["s"], loss = jax_step(state["p"], state["s"], batch)
        loss.block_until_ready()
        return time.perf_counter() - t0

    def time_torch(keep: int | None) -> float:
        t0 = time.perf_counter()
        torch_step(keep)
        sync()
        return time.perf_counter() - t0

    benches = {
        "peak": time_matmul,
        "torch_peak": time_torch_matmul,
        "jax": time_jax,
        "torch": lambda: time_torch(None),
        "torch_keep": lambda: time_torch(TARGETS + 1),
    }
    print(f"parity checked ({time.perf_counter() - started:.1f} s); warming up", flush=True)
    for fn in benches.values():
        for _ in range(args.warmup):
            fn()
    print(f"warm ({time.perf_counter() - started:.1f} s); timing", flush=True)
    # Interleave the frameworks round by round, so load from anything else on the machine
    # hits them alike; report medians.
    times: dict[str, list[float]] = {k: [] for k in benches}
    for _ in range(args.steps):
        for name, fn in benches.items():
            times[name].append(fn())
    med = {k: statistics.median(v) for k, v in times.items()}

    tokens = BATCH * SEQ
    # The machine's peak: the faster of the two frameworks' n^3 float32 matmuls.
    jax_mm, torch_mm = (2.0 * n**3 / med[k] / 1e9 for k in ("peak", "torch_peak"))
    peak = max(jax_mm, torch_mm)
    flops = {
        "jax": step_flops(cfg, tokens, BATCH * TARGETS),
        "torch": step_flops(cfg, tokens, tokens),
        "torch_keep": step_flops(cfg, tokens, BATCH * (TARGETS + 1)),
    }
    rows = []
    for name, label in [
        ("jax", "gptjax (jit, donated, optax.adamw)"),
        ("torch", "transformers + torch AdamW"),
        ("torch_keep", "transformers, logits_to_keep=17"),
    ]:
        total = sum(flops[name].values())
        rows.append((label, med[name], tokens / med[name], total / 1e9, total / med[name] / 1e9))
    print(f"pythia_style(): {cfg.num_params() / 1e6:.1f}M params; batch {BATCH} x {SEQ}, loss on "
          f"the last {TARGETS} tokens; {jax.devices()[0].device_kind} / torch {dev.type}, "
          f"{args.threads} threads (jax {jax.__version__}, torch "
          f"{torch.__version__}); median of {args.steps} steps")  # fmt: skip
    print(
        f"{'':36s} {'step ms':>9s} {'tokens/s':>10s} {'GFLOP':>7s} {'GFLOP/s':>8s} {'of peak':>8s}"
    )
    for label, t, tps, gf, gfs in rows:
        print(f"{label:36s} {t * 1e3:9.1f} {tps:10.0f} {gf:7.2f} {gfs:8.1f} {gfs / peak:8.0%}")
    for key, label, gfs in [
        ("peak", f"jax jit matmul {n}^3 f32", jax_mm),
        ("torch_peak", f"torch matmul {n}^3 f32", torch_mm),
    ]:
        print(f"{label:36s} {med[key] * 1e3:9.1f} {'':10s} {2 * n**3 / 1e9:7.2f} {gfs:8.1f} "
              f"{gfs / peak:8.0%}")  # fmt: skip
    jf = flops["jax"]
    print(f"jax FLOPs by part (GFLOP): dense {jf['dense'] / 1e9:.2f}, attention "
          f"{jf['attention'] / 1e9:.2f}, unembedding at {BATCH * TARGETS} positions "
          f"{jf['unembed'] / 1e9:.2f} (torch: at all {tokens}, "
          f"{flops['torch']['unembed'] / 1e9:.2f})")  # fmt: skip
    speedup = med["torch"] / med["jax"]
    print(f"speedup vs transformers: {speedup:.2f}x; vs transformers with logits_to_keep: "
          f"{med['torch_keep'] / med['jax']:.2f}x")  # fmt: skip
    jax_gflops = sum(jf.values()) / med["jax"] / 1e9
    result = {
        "jax_tokens_per_s": round(tokens / med["jax"], 1),
        "torch_tokens_per_s": round(tokens / med["torch"], 1),
        "speedup": round(speedup, 3),
        "gflops": round(jax_gflops, 2),
        "peak_gflops": round(peak, 2),
        "torch_logits_to_keep_tokens_per_s": round(tokens / med["torch_keep"], 1),
        "device": args.device,
        "params_m": round(cfg.num_params() / 1e6, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
