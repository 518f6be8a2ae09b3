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
from gptjax.pipeline.gradient_features import gradient_features
from gptjax.pipeline.lock import workdir_lock
from gptjax.pipeline.path_kernel import path_kernel_features
from gptjax.pipeline.preparation import Prepared, prepare
from gptjax.pipeline.timings import StageTimer
from gptjax.pipeline.wait import wait_until
from gptjax.pipeline.workdir import Workdir
from gptjax.store import Dynamics
from gptjax.tasks import Example
from simulator import KERNEL_METHODS, FittedSimulator, fit_or_restore, method_config
from simulator.features import cached_features, cached_gpt_features


def collect_stage(config: ml_collections.ConfigDict, workdir: Workdir, prep: Prepared) -> None:
    c = config.collect
    extra_eval = None
    if c.generation_every > 0 and any(e.references for e in prep.pools.test):
        extra_eval = make_generation_eval(
            prep.test_tokens,
            generation_references(prep.pools.test),
            prep.tokenizer,
            seed=config.seed,
            max_new_tokens=c.max_new_tokens,
            temperature=c.sampling_temperature,
            top_p=c.top_p,
            chunk=c.generation_chunk,
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
        also_accept=prep.older_fingerprints,
    )


def generation_references(examples: list[Example]) -> list[tuple[str, ...]]:
    """The references BLEU / ROUGE-L score each test example's generation against: its own,
    or for an example without any (a classification example in an instruction mixture) its
    target text, the answer it is trained to give (as Super-NaturalInstructions scores every
    task by ROUGE-L against the target)."""
    return [e.references or (e.target.strip(),) for e in examples]


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


# Where the rows of the test examples held out of the fit (simulator.unseen_test) go: a
# "metric" of their own in every results file, so the report, the seed sweep and
# experiments/report.py show them as a separate table without knowing about them.
UNSEEN_TEST = "unseen test examples"
# The mean trajectory of a held-out test example averages that example's trajectories in the
# training runs: data no simulator was given. It is kept as an upper reference, renamed.
MEAN_ORACLE = "mean_trajectory_oracle"
MEAN_ORACLE_NOTE = (
    "oracle: the mean of these test examples' trajectories over the training runs, "
    "which the simulators never see"
)


def unseen_test_key(metric: str) -> str:
    """The results key of a metric's rows on the held-out test examples."""
    return f"{metric}, {UNSEEN_TEST}"


def split_test_examples(
    config: ml_collections.ConfigDict, n_test: int
) -> tuple[np.ndarray, np.ndarray]:
    """(seen, unseen) test example ids: the last ``simulator.unseen_test`` are unseen."""
    k = int(config.simulator.unseen_test)
    if not 0 <= k < n_test:
        raise ValueError(
            f"config key 'simulator.unseen_test' ({k}) must be below the {n_test} test examples"
        )
    ids = np.arange(n_test)
    return ids[: n_test - k], ids[n_test - k :]


def simulation_features(
    config: ml_collections.ConfigDict, workdir: Workdir, prep: Prepared
) -> dict[str, np.ndarray]:
    """{"train": [P+U, d], "test": [N, d]} example features of the configured encoder (cached
    in the workdir): MiniLM over the examples' encoder texts, the base GPT model's hidden
    states over the token rows the runs train and evaluate on, or the base model's projected
    (optionally whitened) per-example loss gradients on those rows."""
    sc = config.simulator
    if sc.encoder == "gradient":
        return gradient_features(
            workdir.features_prefix,
            prep.model,
            prep.pool_tokens.loss_inputs(),
            prep.test_tokens.loss_inputs(),
            config_lib.simulator_grad_config(config),
            whiten=float(sc.gradient_whiten),
        )
    if sc.encoder == "gpt":
        return {
            side: cached_gpt_features(
                workdir.features_prefix,
                prep.model,
                tokens.input_ids,
                tokens.attention_mask,
                pooling=sc.pooling,
            )
            for side, tokens in (("train", prep.pool_tokens), ("test", prep.test_tokens))
        }
    return {
        side: cached_features(
            workdir.features_prefix, [e.encoder_text for e in examples], pooling=sc.pooling
        )
        for side, examples in (("train", prep.pools.pool), ("test", prep.pools.test))
    }


def with_kernel_features(
    config: ml_collections.ConfigDict,
    workdir: Workdir,
    prep: Prepared,
    features: dict[str, np.ndarray],
    train_runs: Any,
    num_steps: int,
) -> dict[str, np.ndarray]:
    """``features`` with the gradient kernel's features appended (``gptfluence_kernel``,
    ``gradient_kernel``): by default the Adam-preconditioned kernel along the mean path of
    ``train_runs`` (`gptjax.pipeline.path_kernel`); with ``simulator.kernel_checkpoints = 1``
    and ``kernel_precondition = "none"`` the base model's per-example loss gradients
    projected to ``simulator.kernel_projection_dim`` (the first version). Cached in the
    workdir. Key "kernel": which kernel, in words (recorded beside the kernel simulators'
    results)."""
    sc = config.simulator
    if int(sc.kernel_checkpoints) == 1 and sc.kernel_precondition == "none":
        kernel = gradient_features(
            workdir.features_prefix,
            prep.model,
            prep.pool_tokens.loss_inputs(),
            prep.test_tokens.loss_inputs(),
            config_lib.simulator_grad_config(config, "kernel_projection_dim"),
            center=True,
            first_layer=config_lib.first_layer(config, prep.model),
        )
        label = f"base model's gradient kernel, projected to {sc.kernel_projection_dim} dims"
    else:
        kernel = path_kernel_features(config, workdir, prep, train_runs, num_steps)
        label = kernel["label"]
    joined = {side: np.concatenate([features[side], kernel[side]], 1) for side in features}
    return joined | {"kernel": label}


def _unseen_reason(name: str, fitted: FittedSimulator) -> str | None:
    """Why a fitted simulator cannot predict test examples it never saw (None: it can)."""
    if fitted.kind == "simfluence":
        return (
            "Simfluence learns free parameters per test example; it has none for test "
            "examples held out of its fit"
        )
    if fitted.anchor_traj is not None:
        return f"{name} is anchored on each test example's mean training trajectory"
    return None


def simulate_stage(
    config: ml_collections.ConfigDict, workdir: Workdir, prep: Prepared
) -> dict[str, dict]:
    """Fit every configured simulator per metric (or restore it), score it on the held-out
    test runs beside persistence and the mean trajectory; write tables and plots.

    With ``simulator.unseen_test = k`` the last k test examples are left out of every fit and
    scored apart, under the key ``unseen_test_key(metric)``."""
    sc = config.simulator
    dyn = workdir.runs.load(config.collect.num_runs, expect=prep.run_expect)
    split = run_split(config, dyn)
    features = simulation_features(config, workdir, prep)
    start = int(sc.start)
    wanted = config_lib.names_in(sc.metrics)
    missing = sorted(set(wanted) - set(dyn.metrics))
    if missing:
        raise ValueError(
            f"config key 'simulator.metrics': {missing} were not recorded in these runs "
            f"(recorded: {sorted(dyn.metrics)}; a task without references has no BLEU / ROUGE-L)"
        )
    test = np.asarray(split["test"])
    seen, unseen = split_test_examples(config, len(features["test"]))
    names = config_lib.names_in(sc.models)
    # The kernel simulators' features: computed (or read from the cache) once, for every metric.
    with_kernel = None
    if set(names) & set(KERNEL_METHODS):
        with_kernel = with_kernel_features(
            config, workdir, prep, features, split["train"], dyn.curricula.shape[1]
        )
    results: dict[str, dict] = {}
    for metric, y in sorted(dyn.metrics.items()):
        if wanted and metric not in wanted:
            continue
        true = y[test]
        given = true[:, :start]
        rows: dict[str, dict] = {}
        preds: dict[str, np.ndarray] = {}
        unseen_rows: dict[str, dict] = {}
        unseen_preds: dict[str, np.ndarray] = {}
        for name in names:
            feats = with_kernel if name in KERNEL_METHODS else features
            kernel_dim = feats["train"].shape[1] - features["train"].shape[1]
            kind, fit_config = method_config(name, sc.gptfluence, sc.simfluence, kernel_dim)
            # The fit gets the seen test examples' trajectories and features only (all of
            # them without unseen_test: the same data, so the same fit key as before).
            fitted = fit_or_restore(
                kind,
                fit_config,
                dyn.curricula,
                y[..., seen],
                feats["train"],
                feats["test"][seen],
                split,
                workdir.simulator_dir(metric, name),
                valid=dyn.valid,
                lr=dyn.lr,
                verbose=sc.verbose,
                progress=config.progress,
            )
            preds[name] = fitted.rollout(dyn.curricula[test], given[..., seen], lr=dyn.lr[test])
            rows[name] = evaluate(preds[name], true[..., seen], start) | fitted.result_fields()
            if name in KERNEL_METHODS:
                rows[name]["kernel"] = with_kernel["kernel"]
            if len(unseen) == 0:
                continue
            reason = _unseen_reason(name, fitted)
            if reason is not None:
                unseen_rows[name] = not_applicable(reason)
                continue
            # From their features and given first values only: the fit never saw them.
            unseen_preds[name] = fitted.rollout(
                dyn.curricula[test],
                given[..., unseen],
                lr=dyn.lr[test],
                test_features=feats["test"][unseen],
            )
            unseen_rows[name] = evaluate(unseen_preds[name], true[..., unseen], start) | (
                fitted.result_fields()
            )
        sanity = _sanity_predictions(y, split, start)
        for method in config_lib.SANITY_METHODS:
            preds[method] = sanity[method][..., seen]
            rows[method] = evaluate(preds[method], true[..., seen], start)
            if len(unseen):
                label, note = _unseen_sanity_name(method)
                unseen_preds[label] = sanity[method][..., unseen]
                unseen_rows[label] = evaluate(unseen_preds[label], true[..., unseen], start) | note
        title = f"{metric}: simulators on {len(test)} held-out test runs"
        if len(unseen):
            title += f", the {len(seen)} test examples seen in the fit"
        _write_simulators(workdir, metric, metric, rows, title, true[..., seen], preds, sc)
        results[metric] = rows
        if len(unseen):
            title = (
                f"{metric}: simulators on {len(test)} held-out test runs, the {len(unseen)} "
                f"{UNSEEN_TEST} (ids {int(unseen[0])}..{int(unseen[-1])}, never in the fit)"
            )
            stem = f"{metric}_unseen_test"
            _write_simulators(
                workdir, metric, stem, unseen_rows, title, true[..., unseen], unseen_preds, sc
            )
            results[unseen_test_key(metric)] = unseen_rows
    extra = {}
    if len(unseen):
        extra = {"seen_test_examples": seen.tolist(), "unseen_test_examples": unseen.tolist()}
    report.write_stage_results(
        workdir,
        "simulators",
        results,
        f"## Simulators on {len(test)} held-out test runs",
        test_runs=split["test"],
        train_runs=split["train"],
        **extra,
    )
    return results


def _write_simulators(workdir, metric, stem, rows, title, true, preds, sc) -> None:
    """The simulators' table (``simulators_<stem>.md/.csv``) and trajectory plot."""
    report.write_metric_table(workdir, "simulators", stem, rows, title)
    report.plot_trajectories(
        workdir.result(f"simulators_{stem}.png"), true, preds, metric, sc.plot_examples
    )


def _unseen_sanity_name(method: str) -> tuple[str, dict]:
    """(row name, note) of a sanity baseline on the held-out test examples."""
    if method == "mean_trajectory":
        return MEAN_ORACLE, {"note": MEAN_ORACLE_NOTE}
    return method, {}


def baselines_stage(
    config: ml_collections.ConfigDict, workdir: Workdir, prep: Prepared
) -> dict[str, dict]:
    """TracIn-CP / Grad-Dot (loss only; not applicable to other metrics), persistence and the
    mean trajectory, scored on the held-out test runs by the same harness as the simulators.
    With ``simulator.unseen_test`` the test examples held out of the simulators' fit are
    scored apart (key ``unseen_test_key(metric)``), so every table compares like with like."""
    bc = config.baselines
    dyn = workdir.runs.load(config.collect.num_runs, expect=prep.run_expect)
    split = run_split(config, dyn)
    methods = config_lib.names_in(bc.methods)
    grad_methods = [m for m in methods if m in GRADIENT_METHODS]
    start = int(bc.start)
    if grad_methods and bc.loss_metric not in dyn.metrics:
        raise ValueError(
            f"config key 'baselines.loss_metric': {bc.loss_metric!r} is not among the recorded "
            f"metrics {sorted(dyn.metrics)}"
        )
    # {metric: {method: (prediction over every test example, seconds)}}, scored at the end.
    predicted: dict[str, dict[str, tuple[np.ndarray, float]]] = {m: {} for m in dyn.metrics}
    for metric, y in dyn.metrics.items():
        t0 = time.perf_counter()
        sanity = _sanity_predictions(y, split, start)
        seconds = time.perf_counter() - t0
        for method in methods:
            if method in sanity:
                predicted[metric][method] = (sanity[method], seconds)
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
        predicted[bc.loss_metric]["tracin_cp_all"] = (pred, time.perf_counter() - t0)
        grad_methods.remove("tracin_cp_all")
    if grad_methods:
        params_at, saved_steps = params_reader(workdir.runs, prep.model)
        y = dyn.metrics[bc.loss_metric]
        predicted[bc.loss_metric] |= predict_gradient_methods(
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
            first_layer=config_lib.first_layer(config, prep.model),
        )
    seen, unseen = split_test_examples(config, next(iter(dyn.metrics.values())).shape[2])
    held_out = len(unseen) > 0
    results: dict[str, dict] = {}
    predictions: dict[str, np.ndarray] = {}
    for metric, y in dyn.metrics.items():
        true = y[split["test"]]
        rows: dict[str, dict] = {}
        unseen_rows: dict[str, dict] = {}
        for method in methods:  # config order
            if method not in predicted[metric]:
                if metric != bc.loss_metric:
                    rows[method] = not_applicable()
                    unseen_rows[method] = not_applicable()
                continue
            pred, seconds = predicted[metric][method]
            predictions[f"{metric}__{method}"] = pred
            timing = {"seconds": seconds}
            if not held_out:
                rows[method] = evaluate(pred, true, start) | timing
                continue
            rows[method] = evaluate(pred[..., seen], true[..., seen], start) | timing
            label, note = _unseen_sanity_name(method)
            unseen_rows[label] = evaluate(pred[..., unseen], true[..., unseen], start) | (
                timing | note
            )
        results[metric] = rows
        if held_out:
            results[unseen_test_key(metric)] = unseen_rows
    header = (
        f"## Baselines on {len(split['test'])} held-out test runs (steps {start}..T scored; "
        f"gradient methods: factorize={bc.factorize}, projection_dim={bc.projection_dim}, "
        f"k={bc.num_checkpoints})"
    )
    extra = {}
    if len(unseen):
        extra = {"seen_test_examples": seen.tolist(), "unseen_test_examples": unseen.tolist()}
    report.write_stage_results(
        workdir,
        "baselines",
        results,
        header,
        test_runs=split["test"],
        train_runs=split["train"],
        config=bc.to_dict(),
        **extra,
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
    timer = StageTimer(wd)
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
