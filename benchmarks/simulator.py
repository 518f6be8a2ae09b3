"""Simulator speed: training epoch time and rollout throughput against a naive rollout.

    python -m benchmarks.simulator [--runs 25] [--steps 96] [--test 200] [--dim 384]

Synthetic dynamics at the paper's fine-tuning scale (25 training runs × 96 steps × 200 test
examples, batch 4, 384-d features, pool 200 with subsets of 128 over 3 epochs), GPTfluence
dot variant, order 1, the paper's MLP sizes (384→384→ReLU→384). Measured in one process on
the same CPU:

* epoch_s: one training epoch over every teacher-forced transition (batch 128), the second
  epoch of a fit (the first includes compilation);
* rollout_traj_per_s: (run, test example) trajectories of T steps simulated per second by
  ``FittedSimulator.rollout`` (table of pool factors + jitted scan), after warm-up;
* naive_traj_per_s: the same with ``tests.reference.naive_simulator.naive_rollout``, which
  recomputes the MLPs for every (transition, batch example), as the reference does (jitted per step,
  batched over test examples, measured on a few runs and extrapolated per trajectory).

Last line: JSON {"rollout_traj_per_s", "naive_traj_per_s", "rollout_speedup", "epoch_s"}.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from simulator import fit
from simulator.synthetic import make_synthetic
from tests.reference.naive_simulator import naive_rollout


def _best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=25)
    ap.add_argument("--steps", type=int, default=96)
    ap.add_argument("--test", type=int, default=200)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--naive-runs", type=int, default=2)
    ap.add_argument("--variant", default="dot")
    args = ap.parse_args()

    epochs_data = 3
    subset = args.steps * args.batch // epochs_data
    syn = make_synthetic(
        n_runs=args.runs + 2,
        n_test=args.test,
        n_pool=max(200, subset),
        subset_size=subset,
        epochs=epochs_data,
        batch_size=args.batch,
        dim=args.dim,
        seed=0,
    )
    train, val = np.arange(args.runs), np.arange(args.runs, args.runs + 2)
    cfg = {
        "variant": args.variant,
        "order": 1,
        "epochs": 2,
        "patience": 10,
        "batch_size": 128,
        "lr": 1e-4,
        "warmup_steps": 200,
    }
    t = time.perf_counter()
    fitted = fit(
        "gptfluence", syn.curricula, syn.y, syn.train_features, syn.test_features, train, val, cfg
    )
    fit_s = time.perf_counter() - t
    epochs = [h for h in fitted.history if "seconds" in h]
    epoch_s = epochs[-1]["seconds"]
    first_s = epochs[0]["seconds"]
    transitions = args.runs * args.steps * args.test

    curricula, y0 = syn.curricula[train], syn.y[train, 0]
    n_traj = curricula.shape[0] * args.test
    fitted.rollout(curricula, y0)  # compile
    fast_s = _best_time(lambda: fitted.rollout(curricula, y0), 5)
    fast_tps = n_traj / fast_s

    k = min(args.naive_runs, len(train))
    model = fitted.model
    naive_rollout(model, syn.train_features, syn.test_features, curricula[:1, :2], y0[:1])
    t = time.perf_counter()
    slow = naive_rollout(model, syn.train_features, syn.test_features, curricula[:k], y0[:k])
    naive_s = time.perf_counter() - t
    naive_tps = k * args.test / naive_s
    fast = fitted.rollout(curricula[:k], y0[:k])
    max_diff = float(np.max(np.abs(fast - slow)))

    rows = [
        (
            "data",
            f"{args.runs} runs × {args.steps} steps × {args.test} test, B={args.batch}, "
            f"d={args.dim}, GPTfluence-{args.variant} n=1",
        ),
        ("training transitions / epoch", f"{transitions:,} ({transitions // 128:,} batches)"),
        ("epoch time (2nd epoch)", f"{epoch_s:.2f} s"),
        ("first epoch incl. compile", f"{first_s:.2f} s (fit total {fit_s:.1f} s)"),
        (
            "rollout (table + scan)",
            f"{n_traj:,} traj in {fast_s * 1e3:.1f} ms = {fast_tps:,.0f} traj/s",
        ),
        (
            "naive per-transition rollout",
            f"{k * args.test:,} traj in {naive_s:.2f} s = {naive_tps:,.0f} traj/s",
        ),
        ("speedup", f"{fast_tps / naive_tps:,.0f}×"),
        ("max |fast − naive|", f"{max_diff:.2e}"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}} | value")
    print(f"{'-' * width}-|-{'-' * 40}")
    for name, value in rows:
        print(f"{name:<{width}} | {value}")
    print(
        json.dumps(
            {
                "rollout_traj_per_s": round(fast_tps, 1),
                "naive_traj_per_s": round(naive_tps, 2),
                "rollout_speedup": round(fast_tps / naive_tps, 1),
                "epoch_s": round(epoch_s, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
