r"""How stable is a simulator's fit? Refit one simulator of a finished seed workdir with other
fit seeds, and on training targets moved by a tiny relative amount, and score each fit on the
same held-out test runs as the simulate stage.

    python -m experiments.fit_stability --config configs/smollm2_wmt16_de_en.py --seed 2 \
        --workdir workdirs/smollm2_wmt16_de_en/seed_2 --method gptfluence --metric loss \
        --out docs/results/fit_stability_smollm2_wmt16_seed2.json

Why: a re-collection whose trajectories differ from the first by about 1e-5 relative (float32
summation order) moved GPTfluence's all-steps MSE by 3-7% while every row that depends on the
data alone agreed to 1e-5. This measures the fit's own spread, which a table over 3 seeds
mixes into the seed-to-seed spread.

Variants: the config's settings (must reproduce the stored figure: the fit is deterministic),
``--fit_seeds`` other fit seeds (seed + 100 k), and ``--draws`` perturbations per size in
``--perturb``: every training target y multiplied by (1 + size · z), z standard normal. Each fit
goes to a temporary folder: the workdir's simulators are not touched (the workdir is locked
while this reads it). Scores are against the collected trajectories, beside the mean
trajectory's.

Prints a table and, as its last line, one JSON object.
"""

from __future__ import annotations

import json
import sys
import tempfile

import ml_collections
import numpy as np

from gptjax.cli import quiet_orbax, run_reporting_errors
from gptjax.evaluation import evaluate, mean_trajectory
from gptjax.io import atomic_write_text
from gptjax.pipeline.lock import workdir_lock
from gptjax.pipeline.preparation import prepare
from gptjax.pipeline.seeds import seeded
from gptjax.pipeline.stages import (
    run_split,
    simulation_features,
    split_test_examples,
    with_kernel_features,
)
from gptjax.pipeline.workdir import Workdir
from simulator import KERNEL_METHODS, fit_or_restore, method_config


def refit_spread(
    config: ml_collections.ConfigDict,
    workdir: Workdir,
    *,
    method: str,
    metric: str,
    fit_seeds: int,
    perturb: list[float],
    draws: int,
) -> dict:
    """{"rows": [{"variant", "mse"}...], "mean_trajectory_mse", "min", "max", "median"} for
    ``method`` on ``metric`` of ``workdir``'s held-out test runs (see the module docstring)."""
    if fit_seeds < 0 or draws < 0 or any(not 0 < p < 1 for p in perturb):
        raise ValueError("--fit_seeds and --draws must be >= 0 and --perturb sizes in (0, 1)")
    if not (workdir.config_file.is_file() and workdir.results_dir.is_dir()):
        raise ValueError(
            f"{workdir.root} is not a finished workdir (no config.json or results/): run the "
            "pipeline's collect and simulate stages first"
        )
    sc = config.simulator
    with workdir_lock(workdir.lock_file):
        prep = prepare(config, workdir)
        dyn = workdir.runs.load(config.collect.num_runs, expect=prep.run_expect)
        if metric not in dyn.metrics:
            raise ValueError(
                f"--metric {metric!r} was not recorded in {workdir.root} "
                f"(recorded: {', '.join(sorted(dyn.metrics))})"
            )
        split = run_split(config, dyn)
        base = simulation_features(config, workdir, prep)
        features = base
        if method in KERNEL_METHODS:
            features = with_kernel_features(
                config, workdir, prep, base, split["train"], dyn.curricula.shape[1]
            )
    kernel_dim = features["train"].shape[1] - base["train"].shape[1]
    kind, _ = method_config(method, sc.gptfluence, sc.simfluence, kernel_dim)
    own_seed = int((sc.gptfluence if kind == "gptfluence" else sc.simfluence).seed)
    seen, _ = split_test_examples(config, len(features["test"]))
    start, test = int(sc.start), np.asarray(split["test"])
    y = np.asarray(dyn.metrics[metric])[..., seen]
    true = y[test]

    def score(targets: np.ndarray, fit_seed: int) -> float:
        section = ml_collections.ConfigDict(sc.gptfluence.to_dict())
        simf = ml_collections.ConfigDict(sc.simfluence.to_dict())
        section.seed, simf.seed = fit_seed, fit_seed
        _, fit_config = method_config(method, section, simf, kernel_dim)
        with tempfile.TemporaryDirectory() as tmp:
            fitted = fit_or_restore(
                kind,
                fit_config,
                dyn.curricula,
                targets.astype(y.dtype),
                features["train"],
                features["test"][seen],
                split,
                tmp,
                valid=dyn.valid,
                lr=dyn.lr,
            )
            pred = fitted.rollout(dyn.curricula[test], true[:, :start], lr=dyn.lr[test])
        return float(evaluate(pred, true, start)["mse_mean"])

    variants = [("the config's settings", y, own_seed)]
    for k in range(1, fit_seeds + 1):
        variants.append((f"fit seed {own_seed + 100 * k}", y, own_seed + 100 * k))
    rng = np.random.default_rng(0)
    for size in perturb:
        for d in range(1, draws + 1):
            moved = y * (1 + size * rng.standard_normal(y.shape))
            variants.append((f"targets x (1 + {size:g} z), draw {d}", moved, own_seed))
    rows = []
    for label, targets, fit_seed in variants:
        rows.append({"variant": label, "mse": score(targets, fit_seed)})
        print(f"{label}: all-steps MSE {rows[-1]['mse']:.6g}", file=sys.stderr, flush=True)
    mses = np.array([r["mse"] for r in rows])
    mean_pred = mean_trajectory(y[split["train"]], true, start)
    return {
        "method": method,
        "metric": metric,
        "rows": rows,
        "mean_trajectory_mse": float(evaluate(mean_pred, true, start)["mse_mean"]),
        "min": float(mses.min()),
        "max": float(mses.max()),
        "median": float(np.median(mses)),
    }


def table(result: dict) -> str:
    lines = [
        f"{result['method']} on {result['metric']}: all-steps MSE on the held-out test runs",
        "",
        "| fit | all-steps MSE |",
        "|---|---|",
    ]
    lines += [f"| {r['variant']} | {r['mse']:.6g} |" for r in result["rows"]]
    lines.append(f"| (mean trajectory, for reference) | {result['mean_trajectory_mse']:.6g} |")
    lines.append(
        f"\nrange {result['min']:.6g} .. {result['max']:.6g} "
        f"(max / min {result['max'] / result['min']:.2f}), median {result['median']:.6g}"
    )
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    from absl import flags
    from ml_collections import config_flags

    del argv
    quiet_orbax()
    f = flags.FLAGS

    def run() -> None:
        config = seeded(_CONFIG.value, f.seed)
        result = refit_spread(
            config,
            Workdir(f.workdir),
            method=f.method,
            metric=f.metric,
            fit_seeds=f.fit_seeds,
            perturb=[float(p) for p in f.perturb],
            draws=f.draws,
        )
        config_file = config_flags.get_config_filename(flags.FLAGS["config"])
        result |= {"config": config_file, "seed": f.seed, "workdir": f.workdir}
        print(table(result))
        line = json.dumps({"fit_stability": result})
        if f.out:
            atomic_write_text(f.out, line + "\n")
        print(line)

    run_reporting_errors(run, debug=f.debug)


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    _CONFIG = config_flags.DEFINE_config_file("config", None, "The experiment's config file.")
    flags.DEFINE_integer("seed", 0, "The seed the workdir was run with (as pipeline.seeds).")
    flags.DEFINE_string("workdir", None, "A finished seed workdir (collected and simulated).")
    flags.DEFINE_string("method", "gptfluence", "The simulator to refit.")
    flags.DEFINE_string("metric", "loss", "The metric whose simulator is refitted.")
    flags.DEFINE_integer("fit_seeds", 3, "How many other fit seeds.")
    flags.DEFINE_list("perturb", ["1e-7", "1e-5"], "Relative sizes of the target perturbation.")
    flags.DEFINE_integer("draws", 2, "Perturbations drawn per size.")
    flags.DEFINE_string("out", "", "Also write the JSON object here.")
    flags.DEFINE_bool("debug", False, "Show the traceback of an error.")
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)
