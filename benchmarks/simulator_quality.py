"""Simulator quality on real fine-tuning runs (issue #11): can GPTfluence beat Simfluence,
the curriculum-blind baselines and the gradient / influence-function references?

    python -m benchmarks.simulator_quality --quick        # 1 seed per task
    python -m benchmarks.simulator_quality                # 3 seeds per task
    python -m benchmarks.simulator_quality --tasks demo --seeds 0,1,2,3

Per task (configs/quality_<task>.py: demo, sst2, rte; 44 runs of 24 steps split 24 / 4 / 16)
and seed (the collection seed and the simulators' fit seeds), in
``<workdir_root>/<task>/seed_<s>`` (a second invocation resumes from what is there):

1. the pipeline collects the runs, fits GPTfluence, Simfluence, gptfluence_kernel
   (GPTfluence on the mean trajectory with a gradient kernel: by default Adam-preconditioned,
   along the training runs' mean path) and
   gradient_kernel (that recurrence with the kernel alone) on the training runs
   (early-stopped on the validation runs) and runs TracIn-CP (all steps) on the test runs;
2. every method is scored on the 16 held-out test runs by `gptjax.evaluation.evaluate`:
   all-steps MSE and LDS (per test example, Spearman across the test runs of predicted vs
   true final loss; mean over test examples), and GPTfluence's per-trajectory errors are
   compared with the mean trajectory's (paired bootstrap, runs resampled);
3. references on the same runs: Kronfluence (EK-FAC) and TRAK scores on the PyTorch twin of
   the base model (`tests/reference/kronfluence_lds.py`, `trak_lds.py`), run k's final loss
   predicted as −Σ_{i∈S_k} score(i, n), regulariser chosen by LDS on the training runs.
   Skipped (null in the JSON) when the library is not installed, with the reason printed.
   Each simulator's LDS is compared with each reference's, paired by test example (bootstrap
   interval of the mean per-example difference).

Prints one table per task (mean ± std over seeds), the bootstrap intervals, and as the last
line one JSON object: {"tasks": {task: {"gptfluence_mse", ..., "trak_lds",
"gptfluence_kernel_mse", "gptfluence_kernel_lds", "gradient_kernel_mse",
"gradient_kernel_lds"}}}.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ml_collections
import numpy as np

from gptjax.evaluation import (
    evaluate,
    lds,
    mean_trajectory,
    paired_bootstrap,
    persistence,
    results_table,
    trajectory_mse,
)

if TYPE_CHECKING:  # the pipeline is imported lazily: --help stays fast
    from gptjax.pipeline.preparation import Prepared
    from gptjax.pipeline.workdir import Workdir

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("demo", "sst2", "rte")
# gptfluence_kernel: GPTfluence on the mean trajectory with the base model's gradient kernel
# (simulator/gptfluence.py); gradient_kernel: that recurrence with the kernel alone (no MLPs),
# the variant chosen on the validation runs (docs/simulator.md).
SIMULATORS = ("gptfluence", "simfluence", "gptfluence_kernel", "gradient_kernel")
TRACIN = "tracin_cp_all"
METHODS = ("gptfluence", "simfluence", "mean_trajectory", "persistence", "tracin")
REFERENCES = ("kronfluence", "trak")
JSON_KEYS = (
    "gptfluence_mse",
    "simfluence_mse",
    "mean_trajectory_mse",
    "gptfluence_lds",
    "simfluence_lds",
    "tracin_lds",
    "kronfluence_lds",
    "trak_lds",
    "gptfluence_kernel_mse",
    "gptfluence_kernel_lds",
    "gradient_kernel_mse",
    "gradient_kernel_lds",
    # [mean, 95% interval] of gradient_kernel's LDS minus the reference's, paired by test
    # example, pooled over the seeds (null without the reference)
    "gradient_kernel_lds_minus_kronfluence",
    "gradient_kernel_lds_minus_trak",
)
METRIC = "loss"
# --quick: fewer regularisers for the references (each costs a scoring pass).
QUICK_GRIDS = {"kronfluence": (0.3, 3.0, 30.0), "trak": (1.0, 10.0, 100.0)}


def load_config(task: str) -> ml_collections.ConfigDict:
    """configs/quality_<task>.py's config."""
    path = ROOT / "configs" / f"quality_{task}.py"
    if not path.is_file():
        raise ValueError(f"no config for task {task!r}: {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"quality_{task}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def seeded(
    config: ml_collections.ConfigDict, seed: int, extra: tuple[str, ...] = ()
) -> ml_collections.ConfigDict:
    """The task's config for one seed (collection and fit seeds); ``extra``: further
    simulator names (simulator.METHODS, e.g. gptfluence_anchored) scored beside the rest."""
    c = ml_collections.ConfigDict(config.to_dict())
    c.seed = seed
    c.simulator.gptfluence.seed = seed
    c.simulator.simfluence.seed = seed
    c.baselines.seed = seed
    c.stages = "collect,simulate,baselines"
    c.simulator.models = ",".join(SIMULATORS + tuple(extra))
    c.simulator.metrics = METRIC
    c.baselines.methods = f"persistence,mean_trajectory,{TRACIN}"
    c.baselines.save_predictions = True
    c.progress = False
    return c


def _reference(name: str, prep, dyn, split, out_dir: Path, quick: bool = False) -> dict:
    """Kronfluence / TRAK LDS on the test runs ({"lds_mean": None, "error": why} if it
    cannot run here)."""
    try:
        if name == "kronfluence":
            from tests.reference.kronfluence_lds import kronfluence_scores as scores_fn
        else:
            from tests.reference.trak_lds import trak_scores as scores_fn
        from tests.reference.kronfluence_lds import lds_reference
    except ImportError as err:
        return {"lds_mean": None, "lds_std": None, "error": f"not installed: {err}"}
    grid = list(QUICK_GRIDS[name]) if quick else None
    cache = out_dir / "result.json"
    y_final = dyn.metrics[METRIC][:, -1]
    if cache.is_file():  # computed before for the same runs and grid: reuse
        saved = json.loads(cache.read_text())
        if saved.get("grid") == grid and saved.get("test_runs") == list(split["test"]):
            result = saved["result"]
            if "per_example" not in result:  # an older cache: read the scores' files back
                per = _saved_per_example(name, out_dir, grid, dyn, split, result)
                if per is not None:
                    saved["result"] = result = result | {"per_example": per}
                    cache.write_text(json.dumps(saved))
            return result
    t0 = time.perf_counter()
    try:
        scores = scores_fn(
            prep.model,
            prep.pool_tokens.loss_inputs(),
            prep.test_tokens.loss_inputs(),
            *([QUICK_GRIDS[name]] if quick else []),
            out_dir=out_dir,
        )
        res = lds_reference(scores, dyn.subsets, y_final, split["train"], split["test"])
    except Exception as err:  # a reference must not sink the benchmark; say why
        traceback.print_exc()
        return {"lds_mean": None, "lds_std": None, "error": f"{type(err).__name__}: {err}"}
    res = res | {"seconds": time.perf_counter() - t0}
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {"grid": grid, "test_runs": list(map(int, split["test"])), "result": res}
    cache.write_text(json.dumps(record))
    return res


def _saved_per_example(name, out_dir, grid, dyn, split, result) -> list[float] | None:
    """Per-test-example LDS of a reference whose cache predates keeping it: recomputed from
    the score files the library left in ``out_dir``, and used only if it gives the cached
    regulariser and mean LDS again (None otherwise)."""
    from tests.reference.kronfluence_lds import DAMPINGS, lds_reference, saved_kronfluence_scores
    from tests.reference.trak_lds import LAMBDAS, saved_trak_scores

    if name == "kronfluence":
        scores = saved_kronfluence_scores(out_dir, grid or DAMPINGS)
    else:
        scores = saved_trak_scores(out_dir, grid or LAMBDAS)
    if scores is None:
        return None
    y_final = dyn.metrics[METRIC][:, -1]
    res = lds_reference(scores, dyn.subsets, y_final, split["train"], split["test"])
    same = res["reg"] == result.get("reg") and res["lds_mean"] is not None
    if not same or not math.isclose(res["lds_mean"], result["lds_mean"], abs_tol=1e-9):
        return None
    return res["per_example"]


def run_seed(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    references: tuple[str, ...] = REFERENCES,
    quick: bool = False,
) -> dict[str, Any]:
    """Everything one (task, seed) gives: {"rows": {method: evaluate(...) row},
    "bootstrap": {...}, "references": {name: {...}}, "seconds": {...}}."""
    from gptjax.pipeline.preparation import prepare
    from gptjax.pipeline.stages import run_pipeline, run_split
    from gptjax.pipeline.workdir import Workdir
    from simulator.training import restore_verified

    workdir = Path(workdir)
    t0 = time.perf_counter()
    config = ml_collections.ConfigDict(config.to_dict())
    if Workdir(workdir).result("baselines_predictions.npz").is_file():
        config.stages = "collect,simulate"  # TracIn's predictions are there (checked below)
    run_pipeline(config, workdir)
    seconds = {"pipeline": time.perf_counter() - t0}
    wd = Workdir(workdir)
    prep = prepare(config, wd)
    dyn = wd.runs.load(config.collect.num_runs, expect=prep.run_expect)
    split = run_split(config, dyn)
    y = dyn.metrics[METRIC]
    test = np.asarray(split["test"])
    true = y[test]
    start = int(config.simulator.start)
    preds, notes = {}, {}
    simulators = [n for n in str(config.simulator.models).split(",") if n]
    for name in simulators:
        fitted = restore_verified(wd.simulator_dir(METRIC, name))
        preds[name] = fitted.rollout(dyn.curricula[test], true[:, :start], lr=dyn.lr[test])
        notes[name] = fitted.note
    preds["mean_trajectory"] = mean_trajectory(y[split["train"]], true, start)
    preds["persistence"] = persistence(true, start)
    with np.load(wd.result("baselines_predictions.npz")) as saved:
        if list(saved["test_runs"]) != list(test):
            raise ValueError("the saved TracIn predictions are for other test runs")
        preds["tracin"] = saved[f"{METRIC}__{TRACIN}"]
    rows = {}
    order = ["gptfluence", *[n for n in simulators if n not in METHODS], *METHODS[1:]]
    for name in order:
        rows[name] = evaluate(preds[name], true, start)
        if notes.get(name):
            rows[name]["note"] = notes[name]
    err = {name: trajectory_mse(preds[name], true, start) for name in order}
    runs_of = np.broadcast_to(np.arange(len(test))[:, None], err["gptfluence"].shape)
    boot = {
        f"gptfluence_vs_{other}": paired_bootstrap(
            err["gptfluence"], err[other], groups=runs_of, seed=int(config.seed)
        )
        for other in ("mean_trajectory", "simfluence")
    } | {
        f"{name}_vs_{other}": paired_bootstrap(
            err[name], err[other], groups=runs_of, seed=int(config.seed)
        )
        for name in simulators
        if name not in METHODS
        for other in ("mean_trajectory", "simfluence")
    }
    refs = {}
    for name in references:
        t1 = time.perf_counter()
        refs[name] = _reference(name, prep, dyn, split, workdir / "references" / name, quick)
        seconds[name] = time.perf_counter() - t1
    # LDS paired by test example against each reference: "a better" = the higher LDS.
    lds_of = {name: lds(preds[name][:, -1], true[:, -1]) for name in simulators}
    lds_boot = {
        f"{name}_vs_{ref}": paired_bootstrap(
            -lds_of[name], -np.asarray(refs[ref]["per_example"], np.float64), seed=int(config.seed)
        )
        for name in simulators
        if name != "simfluence"
        for ref in references
        if refs[ref].get("per_example") is not None
    }
    seconds["total"] = time.perf_counter() - t0
    return {
        "rows": rows,
        "bootstrap": boot,
        "lds_bootstrap": lds_boot,
        # Per-test-example LDS of the simulators and the references (pooled over seeds below).
        "lds_per_example": {k: np.asarray(v).tolist() for k, v in lds_of.items()}
        | {k: r["per_example"] for k, r in refs.items() if r.get("per_example") is not None},
        "references": {
            k: {f: v for f, v in r.items() if f != "per_example"} for k, r in refs.items()
        },
        "seconds": seconds,
        "split": {k: list(map(int, v)) for k, v in split.items()},
    }


def _mean_std(values: list[float | None]) -> list[float] | None:
    ok = [float(v) for v in values if v is not None and math.isfinite(v)]
    return [float(np.mean(ok)), float(np.std(ok))] if ok else None


def summarise(per_seed: list[dict]) -> dict[str, Any]:
    """Mean ± std over seeds of every method's MSE and LDS and of the references' LDS."""
    table: dict[str, dict[str, list[float] | None]] = {}
    for name in per_seed[0]["rows"]:
        table[name] = {
            key: _mean_std([s["rows"][name].get(key) for s in per_seed])
            for key in ("mse_mean", "lds_mean")
        }
    for name in REFERENCES:
        table[name] = {
            "mse_mean": None,
            "lds_mean": _mean_std(
                [s["references"].get(name, {}).get("lds_mean") for s in per_seed]
            ),
        }
    # LDS against each reference, paired by test example and pooled over the seeds.
    for name in [n for n in per_seed[0].get("lds_per_example", {}) if n not in REFERENCES]:
        for ref in REFERENCES:
            pairs = [
                (s["lds_per_example"][name], s["lds_per_example"][ref])
                for s in per_seed
                if ref in s.get("lds_per_example", {})
            ]
            if len(pairs) == len(per_seed) and name != "simfluence":
                a = -np.concatenate([np.asarray(p[0], np.float64) for p in pairs])
                b = -np.concatenate([np.asarray(p[1], np.float64) for p in pairs])
                boot = paired_bootstrap(a, b)
                table[name][f"lds_minus_{ref}"] = [-boot["mean_diff"], -boot["hi"], -boot["lo"]]
    return table


def task_json(table: dict[str, dict]) -> dict[str, float | None]:
    """The task's entry of the last-line JSON: means over seeds."""

    def get(method, key):
        v = table.get(method, {}).get(key)
        return None if v is None else round(v[0], 6)

    return {
        "gptfluence_mse": get("gptfluence", "mse_mean"),
        "simfluence_mse": get("simfluence", "mse_mean"),
        "mean_trajectory_mse": get("mean_trajectory", "mse_mean"),
        "gptfluence_lds": get("gptfluence", "lds_mean"),
        "simfluence_lds": get("simfluence", "lds_mean"),
        "tracin_lds": get("tracin", "lds_mean"),
        "kronfluence_lds": get("kronfluence", "lds_mean"),
        "trak_lds": get("trak", "lds_mean"),
        "gptfluence_kernel_mse": get("gptfluence_kernel", "mse_mean"),
        "gptfluence_kernel_lds": get("gptfluence_kernel", "lds_mean"),
        "gradient_kernel_mse": get("gradient_kernel", "mse_mean"),
        "gradient_kernel_lds": get("gradient_kernel", "lds_mean"),
    } | {
        # [mean per-example LDS difference, 95% interval] pooled over the seeds
        f"gradient_kernel_lds_minus_{ref}": table.get("gradient_kernel", {}).get(f"lds_minus_{ref}")
        for ref in REFERENCES
    }


def _cell(v, digits):
    return "–" if v is None else f"{v[0]:.{digits}f} ± {v[1]:.{digits}f}"


def render(task: str, per_seed: list[dict], seeds: list[int]) -> str:
    table = summarise(per_seed)
    n_test = len(per_seed[0]["split"]["test"])
    lines = [
        f"## {task}: {n_test} held-out test runs, mean ± std over {len(seeds)} seed(s) "
        f"({', '.join(map(str, seeds))})",
        "",
        "| method | all-steps MSE | LDS |",
        "|---|---|---|",
    ]
    for name, cell in table.items():
        lines.append(f"| {name} | {_cell(cell['mse_mean'], 4)} | {_cell(cell['lds_mean'], 3)} |")
    lines.append("")
    for name, cell in table.items():
        for ref in REFERENCES:
            if f"lds_minus_{ref}" in cell:
                d, lo, hi = cell[f"lds_minus_{ref}"]
                lines.append(
                    f"{name} LDS − {ref} LDS, per test example, pooled over the seeds: "
                    f"{d:+.3f}, 95% CI [{lo:+.3f}, {hi:+.3f}]"
                )
    lines.append("")
    for seed, s in zip(seeds, per_seed, strict=True):
        for key, b in s["bootstrap"].items():
            first = key.split("_vs_")[0]
            verdict = (
                f"{first} better"
                if b["a_better"]
                else (f"{first} worse" if b["b_better"] else "no clear difference")
            )
            lines.append(
                f"seed {seed}: {key}: mean per-trajectory MSE difference {b['mean_diff']:+.4f}, "
                f"95% CI [{b['lo']:+.4f}, {b['hi']:+.4f}] ({verdict}; runs resampled)"
            )
        for key, b in s.get("lds_bootstrap", {}).items():
            first, second = key.split("_vs_")
            verdict = (
                f"{first} higher"
                if b["a_better"]
                else (f"{second} higher" if b["b_better"] else "no clear difference")
            )
            lines.append(
                f"seed {seed}: LDS {key}: mean per-example difference {-b['mean_diff']:+.3f}, "
                f"95% CI [{-b['hi']:+.3f}, {-b['lo']:+.3f}] ({verdict}; test examples resampled)"
            )
        for name, row in s["rows"].items():
            if row.get("note"):
                lines.append(f"seed {seed}: {name}: {row['note']}")
        for name, ref in s["references"].items():
            if ref.get("error"):
                lines.append(f"seed {seed}: {name}: not run ({ref['error']})")
            else:
                lines.append(
                    f"seed {seed}: {name}: regulariser {ref['reg']:g} chosen on the training "
                    f"runs (training-run LDS {max(v for v in ref['train_lds'].values()):.3f})"
                )
        secs = ", ".join(f"{k} {v:.0f}s" for k, v in s["seconds"].items())
        lines.append(f"seed {seed}: seconds: {secs}")
    return "\n".join(lines) + "\n"


def run(
    tasks: list[str],
    seeds: list[int],
    workdir_root: str | Path,
    references: tuple[str, ...] = REFERENCES,
    configs: dict[str, ml_collections.ConfigDict] | None = None,
    out: Any = sys.stdout,
    quick: bool = False,
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Run every (task, seed), print the tables, return {"tasks": {task: task_json}} (which
    the caller prints as the last line)."""
    result: dict[str, Any] = {"tasks": {}}
    for task in tasks:
        base = (configs or {}).get(task) or load_config(task)
        per_seed = []
        for seed in seeds:
            print(f"=== {task}, seed {seed} ===", file=out, flush=True)
            per_seed.append(
                run_seed(
                    seeded(base, seed, extra),
                    Path(workdir_root) / task / f"seed_{seed}",
                    references,
                    quick,
                )
            )
        print(render(task, per_seed, seeds), file=out, flush=True)
        result["tasks"][task] = task_json(summarise(per_seed))
    return result


# Simulator variants measured on validation runs only (item 4 of issue #11): FitConfig
# overrides of GPTfluence, or "ensemble:<n>" (n fit seeds, rollouts averaged),
# "pooling:<mode>" (other MiniLM pooling) and "encoder:<name>" (other example features, item 3:
# "encoder:gpt" the base model's hidden states, "encoder:gradient" its projected per-example
# gradients, "encoder:gradient_whiten:<λ>" those whitened TRAK-style with λ; see
# `encoder_features`).
ABLATIONS = {
    "default": {},
    "anchor_mean": {"anchor": "mean"},
    "weight_decay_1e-2": {"weight_decay": 1e-2},
    "weight_decay_1e-1": {"weight_decay": 1e-1},
    "lr_3e-4": {"lr": 3e-4},
    "lr_3e-5": {"lr": 3e-5},
    "rollout_k_4": {"rollout_k": 4},
    "order_2": {"order": 2},
    "batch_reduce_mean": {"batch_reduce": "mean"},
    "lr_scale": {"lr_scale": True},
    "concat": {"variant": "concat"},
    "anchor_mean_wd_1e-1": {"anchor": "mean", "weight_decay": 1e-1},
    "ensemble:3": {},
    "pooling:cls": {},
    "encoder:gpt": {},
    "encoder:gradient": {},
    "encoder:gradient_whiten:1": {},
    # gptfluence_kernel (the mean trajectory plus the gradient kernel, see simulator/gptfluence.py)
    # and its variants: kernel alone (one scale, no MLPs), multi-step rollout losses, other
    # kernels (KERNEL_SETTINGS).
    "kernel": {},
    "kernel:nomlp": {"kernel_mlp": False},
    "kernel:k4": {"rollout_k": 4},
    "kernel:k24": {"rollout_k": 24},
    "kernel:nomlp:dim:2048": {"kernel_mlp": False},
    "kernel:nomlp:dim:8192": {"kernel_mlp": False},
    "kernel:nomlp:base_adam": {"kernel_mlp": False},
    "kernel:nomlp:path_plain": {"kernel_mlp": False},
    "kernel:nomlp:path_4": {"kernel_mlp": False},
    "kernel:nomlp:path_24": {"kernel_mlp": False},
}


# The kernel variants' simulator settings (the rest: the config's, by default the
# Adam-preconditioned kernel averaged over 8 steps of the mean path). "dim:<d>": the first
# version, the base model's gradients projected to d dimensions.
_PROJECTED = {"kernel_checkpoints": 1, "kernel_precondition": "none"}
KERNEL_SETTINGS = {
    "kernel:nomlp:dim:2048": _PROJECTED | {"kernel_projection_dim": 2048},
    "kernel:nomlp:dim:8192": _PROJECTED | {"kernel_projection_dim": 8192},
    "kernel:nomlp:base_adam": {"kernel_checkpoints": 1},
    "kernel:nomlp:path_plain": {"kernel_precondition": "none"},
    "kernel:nomlp:path_4": {"kernel_checkpoints": 4},
    "kernel:nomlp:path_24": {"kernel_checkpoints": 24},
}


def encoder_features(
    config: ml_collections.ConfigDict, wd: Workdir, prep: Prepared, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """(pool, test) features of the ablation variant ``encoder:<spec>``, computed (and cached
    in the workdir) by the pipeline's own `simulation_features`, so the ablation measures
    exactly what ``simulator.encoder`` would fit on."""
    from gptjax.pipeline.stages import simulation_features

    spec = name.split(":", 1)[1]
    c = ml_collections.ConfigDict(config.to_dict())
    if spec == "gpt":
        c.simulator.encoder, c.simulator.pooling = "gpt", "mean"
    elif spec == "gradient":
        c.simulator.encoder, c.simulator.gradient_whiten = "gradient", 0.0
    elif spec.startswith("gradient_whiten:"):
        c.simulator.encoder = "gradient"
        c.simulator.gradient_whiten = float(spec.split(":", 1)[1])
    else:
        raise ValueError(
            f"unknown encoder variant {name!r}: encoder:gpt | encoder:gradient | "
            "encoder:gradient_whiten:<λ>"
        )
    feats = simulation_features(c, wd, prep)
    return feats["train"], feats["test"]


def ablate(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    variants: list[str],
    out: Any = sys.stdout,
) -> dict[str, dict]:
    """Fit each GPTfluence variant on the first 5/6 of the training runs, early-stopped on the
    last 1/6, and score it on the *validation* runs (never the test runs). Also Simfluence and
    the mean trajectory, fitted the same way, for scale. Runs the pipeline's collection first
    (resumes: with every run on disk and verified it collects nothing; a workdir collected
    under another collection config is refused, not collected again). ``encoder:*`` variants
    compute their features with the pipeline and cache them in the workdir."""
    import dataclasses

    from gptjax.pipeline.preparation import prepare
    from gptjax.pipeline.stages import run_pipeline, run_split, with_kernel_features
    from gptjax.pipeline.workdir import Workdir
    from simulator import SIMFLUENCE_DEFAULTS, FitConfig, fit, method_config
    from simulator.features import cached_features

    c = ml_collections.ConfigDict(config.to_dict())
    c.stages = "collect"
    run_pipeline(c, workdir)
    wd = Workdir(workdir)
    prep = prepare(c, wd)
    dyn = wd.runs.load(c.collect.num_runs, expect=prep.run_expect)
    split = run_split(c, dyn)
    y = dyn.metrics[METRIC]
    n_inner = max(1, len(split["train"]) // 6)
    fit_runs, stop_runs = split["train"][:-n_inner], split["train"][-n_inner:]
    val = np.asarray(split["val"])
    true = y[val]

    def feats(pooling):
        return [
            cached_features(wd.features_prefix, [e.encoder_text for e in ex], pooling=pooling)
            for ex in (prep.pools.pool, prep.pools.test)
        ]

    rows: dict[str, dict] = {}

    def score(name, pred, t0, note=""):
        rows[name] = evaluate(pred, true) | {"seconds": time.perf_counter() - t0}
        if note:
            rows[name]["note"] = note
        m = rows[name]
        print(
            f"{name:24s} val MSE {m['mse_mean']:.4f}  val LDS {m['lds_mean']:.3f}  "
            f"({m['seconds']:.0f}s) {note}",
            file=out,
            flush=True,
        )

    t0 = time.perf_counter()
    score("mean_trajectory", mean_trajectory(y[fit_runs], true), t0)
    t0 = time.perf_counter()
    sim = fit("simfluence", dyn.curricula, y, None, None, fit_runs, stop_runs,
              SIMFLUENCE_DEFAULTS, valid=dyn.valid, lr=dyn.lr)  # fmt: skip
    score("simfluence", sim.rollout(dyn.curricula[val], true[:, :1]), t0, sim.note)
    base = dataclasses.asdict(FitConfig()) | {"seed": int(c.seed)}
    mean_feats = feats("mean")
    for name in variants:
        t0 = time.perf_counter()
        tr, te, n_fits, overrides = *mean_feats, 1, ABLATIONS.get(name, {})
        method, kernel_dim = "gptfluence", 0
        if name.startswith("ensemble:"):
            n_fits = int(name.split(":")[1])
        if name.startswith("pooling:"):
            tr, te = feats(name.split(":")[1])
        if name.startswith("encoder:"):
            tr, te = encoder_features(c, wd, prep, name)
        if name.startswith("kernel"):
            kc = ml_collections.ConfigDict(c.to_dict())
            kc.simulator.update(KERNEL_SETTINGS.get(name, {}))
            num_steps = dyn.curricula.shape[1]
            joined = with_kernel_features(
                kc, wd, prep, {"train": tr, "test": te}, fit_runs, num_steps
            )
            method, kernel_dim = "gptfluence_kernel", joined["train"].shape[1] - tr.shape[1]
            tr, te = joined["train"], joined["test"]
        preds, notes = [], []
        for k in range(n_fits):
            section = base | overrides | {"seed": base["seed"] + 1000 * k}
            _, cfg = method_config(method, section, {}, kernel_dim)
            g = fit("gptfluence", dyn.curricula, y, tr, te, fit_runs, stop_runs, cfg,
                    valid=dyn.valid, lr=dyn.lr)  # fmt: skip
            preds.append(g.rollout(dyn.curricula[val], true[:, :1], lr=dyn.lr[val]))
            notes.append(g.note)
        score(name, np.mean(preds, axis=0), t0, "; ".join(sorted({n for n in notes if n})))
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1 seed per task (default: 3)")
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--seeds", default="", help="comma-separated; overrides --quick")
    p.add_argument("--workdir_root", default="workdirs/quality")
    p.add_argument(
        "--extra_simulators",
        default="",
        help="comma-separated further simulators to score (table only), e.g. gptfluence_anchored",
    )
    p.add_argument(
        "--ablation",
        default="",
        help="comma-separated GPTfluence variants (or 'all') to score on the validation runs "
        "instead of the benchmark",
    )
    p.add_argument(
        "--references",
        default=",".join(REFERENCES),
        help="comma-separated subset of kronfluence,trak ('' for none)",
    )
    a = p.parse_args(argv)
    from gptjax.cli import quiet_orbax

    quiet_orbax()
    tasks = [t.strip() for t in a.tasks.split(",") if t.strip()]
    if a.seeds:
        seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    else:
        seeds = [0] if a.quick else [0, 1, 2]
    refs = tuple(r.strip() for r in a.references.split(",") if r.strip())
    unknown = [r for r in refs if r not in REFERENCES]
    if unknown:
        p.error(f"unknown references {unknown}; known: {', '.join(REFERENCES)}")
    t0 = time.perf_counter()
    if a.ablation:
        names = list(ABLATIONS) if a.ablation == "all" else a.ablation.split(",")
        out = {}
        for task in tasks:
            for seed in seeds:
                print(f"=== ablation: {task}, seed {seed} (validation runs) ===", flush=True)
                rows = ablate(
                    seeded(load_config(task), seed),
                    Path(a.workdir_root) / task / f"seed_{seed}",
                    names,
                )
                print(results_table(rows), flush=True)
                out[f"{task}/seed_{seed}"] = {
                    k: {"val_mse": v["mse_mean"], "val_lds": v["lds_mean"]} for k, v in rows.items()
                }
        print(json.dumps({"ablation": out}, allow_nan=True))
        return
    extra = tuple(n.strip() for n in a.extra_simulators.split(",") if n.strip())
    result = run(tasks, seeds, a.workdir_root, refs, quick=a.quick, extra=extra)
    print(f"total {time.perf_counter() - t0:.0f} s", flush=True)
    print(json.dumps(result, sort_keys=False, allow_nan=False))


if __name__ == "__main__":
    main()
