r"""The gradient kernel of the paper-scale config: what its simulate stage computes for
``gptfluence_kernel`` and ``gradient_kernel`` (the base model's per-example loss gradients,
projected to ``simulator.kernel_projection_dim`` dimensions, pool side centred), for a
Pythia-410M-shaped GPT-NeoX (d_model 1024, 24 layers, 16 heads, vocabulary 50304; weights
built in code, as no pretrained checkpoint is on the machine) on real SST-2 examples, with
configs/paper_pythia410m.py's own gradient settings and sequence length.

Each call is what the stage does once: the projection matrices drawn, every example's
gradient taken and projected, one chunk at a time. Two calls compile (on half of ``--pool``
+ ``--test`` examples, at least 2 + 1, then on all of them); two more, on the same two sets
without the cache, are timed. Their difference gives the seconds per example, the rest of a
call is its fixed cost (drawing the projection's random matrices is part of it);
together they project the config's 200 pool + 200 test examples. The peak memory (the
process's resident set on a CPU, the device's peak on an accelerator) does not grow with the
number of examples; the random weights change neither the work nor the memory.

    python -m benchmarks.kernel_paper_scale [--pool 16] [--test 16] [--factorize vocab]
    python -m benchmarks.kernel_paper_scale --hidden_size 64 --num_layers 2 --num_heads 4
        # a CPU-sized smoke run of the same code

Prints a table; the last line is JSON: {"s_per_example", "fixed_s", "protocol_minutes",
"peak_gb" (in GiB; the key keeps its first name for the records), ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import runpy
import tempfile
import time
from pathlib import Path

from benchmarks.collect_llm import device_peak_gib
from benchmarks.collect_paper_scale import PAPER_CONFIG, add_shape_args


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pool", type=int, default=16, help="pool examples")
    p.add_argument("--test", type=int, default=16, help="test examples")
    add_shape_args(p)
    from baselines.grads import FACTORIZE

    p.add_argument(
        "--factorize",
        default=None,
        choices=FACTORIZE,
        help="baselines.factorize for the gradients (default: the config's; 'vocab' projects "
        "each block's explicit gradient, the pipeline's default elsewhere)",
    )
    return p


def peak_gib() -> tuple[float, str]:
    """(peak memory in GiB, what was measured): the device's peak where it reports one, else
    this process's peak resident set (ru_maxrss, in KiB on Linux)."""
    device = device_peak_gib()
    if device is not None:
        return device, "device peak"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "process peak RSS"


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.pool < 2 or args.test < 1:
        # The pool side is centred on its mean: one example alone would be all zeros.
        raise SystemExit("error: --pool must be >= 2 and --test >= 1")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

    import jax
    import numpy as np

    from benchmarks.collect_paper_scale import paper_shaped_model, sst2_inputs
    from gptjax.pipeline import config as config_lib
    from gptjax.pipeline.gradient_features import gradient_features

    config = runpy.run_path(str(PAPER_CONFIG))["get_config"]()
    if args.factorize is not None:
        config.baselines.factorize = args.factorize
    grad_config = config_lib.simulator_grad_config(config, "kernel_projection_dim")
    model, num_params = paper_shaped_model(args.hidden_size, args.num_layers, args.num_heads)
    cfg = model.config
    max_len = int(config.data.max_len)
    pool, test = sst2_inputs(args.pool, args.test, max_len, args.data_root)
    device = jax.devices()[0]
    print(
        f"model: {num_params / 1e6:.0f}M parameters (d_model {cfg.hidden_size}, "
        f"{cfg.num_layers} layers); {device.platform} ({device.device_kind}); "
        f"{args.pool} pool + {args.test} test examples, max_len {max_len}; projected to "
        f"{grad_config.projection_dim} dims, factorize {grad_config.factorize!r}, "
        f"memory_budget_mb {grad_config.memory_budget_mb:.0f}",
        flush=True,
    )

    def timed(n_pool: int, n_test: int) -> float:
        part = [{k: v[:n] for k, v in side.items()} for side, n in ((pool, n_pool), (test, n_test))]
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            features = gradient_features(
                Path(tmp) / "kernel", model, *part, grad_config, center=True
            )
            wall = time.perf_counter() - start
        assert features["train"].shape == (n_pool, grad_config.projection_dim)
        assert np.isfinite(features["train"]).all() and np.isfinite(features["test"]).all()
        return wall

    sets = {
        "half": (max(2, args.pool // 2), max(1, args.test // 2)),
        "all": (args.pool, args.test),
    }
    compile_s = {name: timed(*sizes) for name, sizes in sets.items()}
    wall = {name: timed(*sizes) for name, sizes in sets.items()}
    count = {name: sum(sizes) for name, sizes in sets.items()}
    extra = count["all"] - count["half"]
    per_example = (wall["all"] - wall["half"]) / extra if extra else 0.0
    # Below the timing noise (the calls differ by less than their own spread): then the
    # all-examples call's seconds per example, an upper bound, with no fixed part.
    resolved = per_example > 0
    if not resolved:
        per_example = wall["all"] / count["all"]
    fixed = max(0.0, wall["all"] - count["all"] * per_example)
    protocol = int(config.data.pool_size) + int(config.data.test_size)
    protocol_s = fixed + protocol * per_example
    peak, peak_what = peak_gib()

    print()
    print(f"{'call':36s} {'examples':>8s} {'seconds':>9s}")
    for name in sets:
        print(f"{'compiling, ' + name:36s} {count[name]:8d} {compile_s[name]:9.1f}")
    for name in sets:
        print(f"{'timed, ' + name:36s} {count[name]:8d} {wall[name]:9.1f}")
    if not resolved:
        print(
            "the two timed calls differ by less than their noise: the rate below is an upper "
            "bound (take more examples)"
        )
    print(
        f"per example {per_example:.3f} s, fixed per call {fixed:.1f} s; projected: {protocol} "
        f"examples (the config's pool + test) in {protocol_s / 60:.1f} min after compilation; "
        f"{peak_what} {peak:.1f} GiB"
    )
    result = {
        "device": f"{device.platform}:{device.device_kind}",
        "params_m": round(num_params / 1e6, 1),
        "examples": count["all"],
        "max_len": max_len,
        "projection_dim": grad_config.projection_dim,
        "factorize": grad_config.factorize,
        "compile_calls_s": [round(compile_s[name], 2) for name in sets],
        "timed_calls_s": [round(wall[name], 2) for name in sets],
        "timed_examples": [count[name] for name in sets],
        "s_per_example": round(per_example, 4),
        "s_per_example_resolved": resolved,
        "fixed_s": round(fixed, 2),
        "protocol_examples": protocol,
        "protocol_minutes": round(protocol_s / 60, 2),
        "peak_gb": round(peak, 2),
        "peak_measured": peak_what,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
