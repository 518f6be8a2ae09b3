r"""Why BLEU / ROUGE-L trajectories carry no across-run signal a simulator could learn here
(issue #11, item 5): statistics of the recorded runs of a generation task.

    python -m experiments.generation_signal workdirs/finetune_wmt16_de_en/seed_{0,1,2} \
        --out docs/results/generation_signal.json

For each workdir (its runs, all of them) and metric (BLEU, ROUGE-L), at the last recorded
step:

* ``across_run_std`` / ``between_example_std``: how much a test example's score moves from
  run to run (std over runs, mean over examples) against how much examples differ (std over
  examples of their mean over runs); the loss beside them;
* ``rho_with_loss``: per test example, Spearman across runs between the metric and the loss,
  mean over examples (examples constant across runs left out). A simulator of the loss that
  were perfect would carry about this much of the metric's across-run ranking;
* ``corpus_rho_with_loss``: the same between the runs' means over test examples (a
  corpus-level score against the run's mean loss);
* ``run_share``: the fraction of the metric's across-run variance (deviations from each
  example's mean over runs) that is one shift per run, shared by all its examples;
* ``persistence``: per example, Spearman across runs between the deviations at the last two
  recorded steps: high means the deviations are a property of the run's parameters, not of
  one decoding.

Prints a table and, as its last line, one JSON object.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from gptjax.evaluation import spearman
from gptjax.store import RunStore

METRICS = ("bleu", "rougeL")


def _mean_rho(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over columns of Spearman ρ across rows (columns constant on either side left out;
    NaN if none is left)."""
    rhos = [
        spearman(a[:, n], b[:, n])
        for n in range(a.shape[1])
        if np.nanstd(a[:, n]) > 0 and np.nanstd(b[:, n]) > 0
    ]
    return float(np.mean(rhos)) if rhos else float("nan")


def signal_stats(metrics: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """The statistics of the module docstring from ``metrics`` {name: [K, T+1, N]} (NaN at the
    steps that were not recorded; "loss" required)."""
    loss = np.asarray(metrics["loss"], np.float64)
    out: dict[str, dict[str, float]] = {}
    for name in [m for m in METRICS if m in metrics]:
        y = np.asarray(metrics[name], np.float64)
        steps = [t for t in range(y.shape[1]) if np.isfinite(y[:, t]).all()]
        if len(steps) < 2:
            raise ValueError(f"{name}: fewer than two steps recorded in every run")
        last, before = y[:, steps[-1]], y[:, steps[-2]]
        dev = last - last.mean(0)
        total = float(np.mean(dev**2))
        out[name] = {
            "step": steps[-1],
            "across_run_std": float(np.mean(last.std(0))),
            "between_example_std": float(last.mean(0).std()),
            "loss_across_run_std": float(np.mean(loss[:, steps[-1]].std(0))),
            "loss_between_example_std": float(loss[:, steps[-1]].mean(0).std()),
            "rho_with_loss": _mean_rho(last, loss[:, steps[-1]]),
            "corpus_rho_with_loss": float(spearman(last.mean(1), loss[:, steps[-1]].mean(1))),
            "run_share": float(np.mean(dev.mean(1) ** 2) / total) if total > 0 else float("nan"),
            "persistence": _mean_rho(before - before.mean(0), dev),
            "constant_examples": float(np.mean(last.std(0) == 0)),
        }
    if not out:
        raise ValueError(f"no generation metric recorded (need one of {', '.join(METRICS)})")
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("workdirs", nargs="+")
    p.add_argument("--out", default="", help="also write the JSON object here")
    a = p.parse_args(argv)
    result = {}
    for wd in a.workdirs:
        result[wd] = signal_stats(RunStore(Path(wd) / "runs").load().metrics)
    keys = ("across_run_std", "between_example_std", "rho_with_loss", "corpus_rho_with_loss")
    keys += ("run_share", "persistence")
    print("| workdir | metric | " + " | ".join(keys) + " |")
    print("|---|---|" + "---|" * len(keys))
    for wd, stats in result.items():
        for name, row in stats.items():
            print(f"| {wd} | {name} | " + " | ".join(f"{row[k]:.3f}" for k in keys) + " |")
    line = json.dumps({"generation_signal": result})
    if a.out:
        Path(a.out).write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
