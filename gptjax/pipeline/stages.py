"""The pipeline's stages as plain functions over a `Workdir` (main.py and notebooks call these).

    wd = Workdir("workdirs/demo")
    prep = prepare(config, wd)              # config check, pools, tokens, base model
    collect_stage(config, wd, prep)         # fine-tuning runs -> dynamics store
    simulate_stage(config, wd, prep)        # GPTfluence / Simfluence fitted and scored
    baselines_stage(config, wd, prep)       # TracIn-CP, Grad-Dot, persistence, mean trajectory
    report_stage(config, wd)                # one table per metric from the stages' results

Everything a stage produces lives in the workdir, so running the same command again
resumes: finished runs and fitted simulators are not recomputed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from baselines import GRADIENT_METHODS, predict_gradient_methods, simulate_from_dots
from gptjax.collect.checkpoints import params_reader
from gptjax.collect.generation_eval import make_generation_eval
from gptjax.collect.runner import collect
from gptjax.evaluation import evaluate, mean_trajectory, not_applicable, persistence
from gptjax.pipeline import config as config_lib
from gptjax.pipeline import report
from gptjax.pipeline.lock import workdir_lock
from gptjax.pipeline.preparation import Prepared, prepare
from gptjax.pipeline.wait import wait_until
from gptjax.pipeline.workdir import Workdir
from gptjax.store import Dynamics
from simulator import fit_or_restore, method_config
from simulator.features import cached_features


def collect_stage(config: ml_collections.ConfigDict, workdir: Workdir, prep: Prepared) -> None:
    c = config.collect
    extra_eval = None
    if c.generation_every > 0 and prep.pools.test[0].references:
        extra_eval = make_generation_eval(
            prep.test_tokens,
            [e.references for e in prep.pools.test],
            prep.tokenizer,
            seed=config.seed,
            max_new_tokens=c.max_new_tokens,
            temperature=c.sampling_temperature,
            top_p=c.top_p,
        )
    collect(
        workdir.runs,
        config_lib.collect_spec(config),
        prep.model,
        prep.pool_tokens.loss_inputs(),
        prep.test_tokens.loss_inputs(),
        pool_size=len(prep.pools.train),
        unseen_size=len(prep.pools.unseen),
        extra_eval=extra_eval,
        extra_eval_every=max(c.generation_every, 1),
        meta={
            "task": config.data.task,
            "model": prep.model.config.to_dict(),
            "config_fingerprint": prep.fingerprint,
        },
        progress=config.progress,
    )


def run_split(config: ml_collections.ConfigDict, dyn: Dynamics) -> dict[str, list[int]]:
    """Train / validation / test runs, in run order, leaving out runs that diverged."""
    n_train, n_val, n_test = config_lib.split_counts(config)
    valid = [k for k in range(dyn.num_runs) if dyn.valid[k]]
    if len(valid) < n_train + n_val + n_test:
        raise ValueError(
            f"{dyn.num_runs - len(valid)} runs diverged; {len(valid)} valid runs are too few "
            f"for the split {config.collect.split}"
        )
    return {
        "train": valid[:n_train],
        "val": valid[n_train : n_train + n_val],
        "test": valid[n_train + n_val : n_train + n_val + n_test],
    }


def _sanity_predictions(y: np.ndarray, split: dict, start: int) -> dict[str, np.ndarray]:
    true = y[split["test"]]
    return {
        "persistence": persistence(true, start),
        "mean_trajectory": mean_trajectory(y[split["train"]], true, start),
    }


def simulate_stage(
    config: ml_collections.ConfigDict, workdir: Workdir, prep: Prepared
) -> dict[str, dict]:
    """Fit every configured simulator per metric (or restore it), score it on the held-out
    test runs beside persistence and the mean trajectory; write tables and plots."""
    sc = config.simulator
    dyn = workdir.runs.load(
        config.collect.num_runs, expect={"config_fingerprint": prep.fingerprint}
    )
    split = run_split(config, dyn)
    features = {
        side: cached_features(
            workdir.features_prefix, [e.encoder_text for e in examples], pooling=sc.pooling
        )
        for side, examples in (("train", prep.pools.pool), ("test", prep.pools.test))
    }
    start = int(sc.start)
    wanted = config_lib.names_in(sc.metrics)
    missing = sorted(set(wanted) - set(dyn.metrics))
    if missing:
        raise ValueError(
            f"config key 'simulator.metrics': {missing} were not recorded in these runs "
            f"(recorded: {sorted(dyn.metrics)}; a task without references has no BLEU / ROUGE-L)"
        )
    test = np.asarray(split["test"])
    results: dict[str, dict] = {}
    for metric, y in sorted(dyn.metrics.items()):
        if wanted and metric not in wanted:
            continue
        true = y[test]
        rows: dict[str, dict] = {}
        preds: dict[str, np.ndarray] = {}
        for name in config_lib.names_in(sc.models):
            kind, fit_config = method_config(name, sc.gptfluence, sc.simfluence)
            fitted = fit_or_restore(
                kind,
                fit_config,
                dyn.curricula,
                y,
                features["train"],
                features["test"],
                split,
                workdir.simulator_dir(metric, name),
                valid=dyn.valid,
                lr=dyn.lr,
                verbose=sc.verbose,
                progress=config.progress,
            )
            preds[name] = fitted.rollout(dyn.curricula[test], true[:, :start], lr=dyn.lr[test])
            rows[name] = evaluate(preds[name], true, start) | fitted.result_fields()
        preds |= _sanity_predictions(y, split, start)
        for name in config_lib.SANITY_METHODS:
            rows[name] = evaluate(preds[name], true, start)
        title = f"{metric}: simulators on {len(test)} held-out test runs"
        report.write_metric_table(workdir, "simulators", metric, rows, title)
        report.plot_trajectories(
            workdir.result(f"simulators_{metric}.png"), true, preds, metric, sc.plot_examples
        )
        results[metric] = rows
    report.write_stage_results(
        workdir,
        "simulators",
        results,
        f"## Simulators on {len(test)} held-out test runs",
        test_runs=split["test"],
        train_runs=split["train"],
    )
    return results


def baselines_stage(
    config: ml_collections.ConfigDict, workdir: Workdir, prep: Prepared
) -> dict[str, dict]:
    """TracIn-CP / Grad-Dot (loss only; not applicable to other metrics), persistence and the
    mean trajectory, scored on the held-out test runs by the same harness as the simulators."""
    bc = config.baselines
    dyn = workdir.runs.load(
        config.collect.num_runs, expect={"config_fingerprint": prep.fingerprint}
    )
    split = run_split(config, dyn)
    methods = config_lib.names_in(bc.methods)
    grad_methods = [m for m in methods if m in GRADIENT_METHODS]
    start = int(bc.start)
    if grad_methods and bc.loss_metric not in dyn.metrics:
        raise ValueError(
            f"config key 'baselines.loss_metric': {bc.loss_metric!r} is not among the recorded "
            f"metrics {sorted(dyn.metrics)}"
        )
    results: dict[str, dict] = {}
    predictions: dict[str, np.ndarray] = {}
    for metric, y in dyn.metrics.items():
        true = y[split["test"]]
        t0 = time.perf_counter()
        sanity = _sanity_predictions(y, split, start)
        seconds = time.perf_counter() - t0
        rows: dict[str, dict] = {}
        for method in methods:
            if method in sanity:
                pred = sanity[method]
                rows[method] = evaluate(pred, true, start) | {"seconds": seconds}
                predictions[f"{metric}__{method}"] = pred
            elif metric != bc.loss_metric:
                rows[method] = not_applicable()
        results[metric] = rows
    if "tracin_cp_all" in grad_methods and dyn.tracin_dots is not None:
        # Recorded during collection: no checkpoint read, no gradient taken.
        y = dyn.metrics[bc.loss_metric]
        t0 = time.perf_counter()
        pred = np.stack(
            [
                simulate_from_dots(dyn.tracin_dots[k], dyn.lr[k], y[k, :start], start)
                for k in split["test"]
            ]
        )
        results[bc.loss_metric]["tracin_cp_all"] = evaluate(pred, y[split["test"]], start) | {
            "seconds": time.perf_counter() - t0
        }
        predictions[f"{bc.loss_metric}__tracin_cp_all"] = pred
        grad_methods.remove("tracin_cp_all")
    if grad_methods:
        params_at, saved_steps = params_reader(workdir.runs, prep.model)
        y = dyn.metrics[bc.loss_metric]
        predicted = predict_gradient_methods(
            grad_methods,
            split["test"],
            curricula=dyn.curricula,
            lr=dyn.lr,
            y=y,
            graphdef=nnx.split(prep.model)[0],
            params_at=params_at,
            saved_steps=saved_steps,
            train_tokens=prep.pool_tokens.loss_inputs(),
            test_tokens=prep.test_tokens.loss_inputs(),
            grad_config=config_lib.grad_config(bc),
            num_checkpoints=bc.num_checkpoints,
            start=start,
            progress=config.progress,
        )
        true = y[split["test"]]
        rows = results[bc.loss_metric]
        for method, (pred, seconds) in predicted.items():
            rows[method] = evaluate(pred, true, start) | {"seconds": seconds}
            predictions[f"{bc.loss_metric}__{method}"] = pred
    if bc.loss_metric in results:
        rows = results[bc.loss_metric]
        results[bc.loss_metric] = {m: rows[m] for m in methods if m in rows}  # config order
    header = (
        f"## Baselines on {len(split['test'])} held-out test runs (steps {start}..T scored; "
        f"gradient methods: factorize={bc.factorize}, projection_dim={bc.projection_dim}, "
        f"k={bc.num_checkpoints})"
    )
    report.write_stage_results(
        workdir,
        "baselines",
        results,
        header,
        test_runs=split["test"],
        train_runs=split["train"],
        config=bc.to_dict(),
    )
    if bc.save_predictions:
        report.write_predictions(
            workdir.result("baselines_predictions.npz"),
            {"test_runs": np.asarray(split["test"])} | predictions,
        )
    return results


def report_stage(config: ml_collections.ConfigDict, workdir: Workdir) -> str:
    """One Markdown report of every method on the held-out test runs, per metric, rendered
    from the results the workdir holds."""
    title = (
        f"Results: {config.data.task}, {config.model.source} model; "
        f"{config_lib.collection_regime(config)}"
    )
    return report.render_report(workdir, title)


def run_pipeline(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Run the stages the config names, in order; returns each stage's results."""
    config_lib.validate(config)
    wd = Workdir(workdir)
    if jax.process_index() != 0:
        return _run_stages(config, wd)
    with workdir_lock(wd.lock_file):
        return _run_stages(config, wd)


def _run_stages(config: ml_collections.ConfigDict, wd: Workdir) -> dict[str, Any]:
    stages = config_lib.stages_of(config)
    results: dict[str, Any] = {}
    timer = report.StageTimer(wd)
    if set(stages) & {"collect", "simulate", "baselines"}:
        with timer("prepare"):
            prep = prepare(config, wd)
        if "collect" in stages:
            with timer("collect"):
                collect_stage(config, wd, prep)
        if jax.process_count() > 1:
            if jax.process_index() != 0:
                return results  # process 0 runs the stages that need every run
            if set(stages) & {"simulate", "baselines"}:
                wait_for_runs(wd, config.collect.num_runs)
        if "simulate" in stages:
            with timer("simulate"):
                results["simulate"] = simulate_stage(config, wd, prep)
        if "baselines" in stages:
            with timer("baselines"):
                results["baselines"] = baselines_stage(config, wd, prep)
    if "report" in stages and jax.process_index() == 0:
        print(report_stage(config, wd))
    return results


def wait_for_runs(workdir: Workdir, num_runs: int) -> None:
    """Block until every run is on disk (other processes write theirs)."""
    wait_until(
        lambda: set(range(num_runs)) <= workdir.runs.completed(),
        f"all {num_runs} runs in {workdir.runs.root}",
        poll_s=1.0,
    )
