r"""Mislabelled data: find the flipped labels of a noisy pool by self-influence.

    python -m experiments.mislabel --config configs/mislabel_sst2.py \
        --workdir workdirs/mislabel_sst2 [--seeds 0,1,2] [--retrain_fractions 0.2,0.4]

With ``--seeds`` each seed runs the whole study in its own workdir ``<workdir>/seed_<s>``
(seeded as ``gptjax.pipeline.seeds`` seeds a sweep: pools, flipped labels, base model,
curricula, fits), so an interrupted sweep resumes; without it, the config's seed in
``<workdir>``.

1. Runs the pipeline on the config (resumes: nothing finished is recomputed).
2. Ranks the training pool, most suspicious first, by
   * **GPTfluence self-influence**: the fitted simulator's one-step effect of example i on
     itself (its features on both the training and the test side), at the training runs'
     mean test loss; most negative first (training on it lowers its own loss most);
   * **GPTfluence test harm** (`gptjax.pipeline.queries.mislabel_ranking`): the summed
     harmful effect on the test examples;
   * **TracIn self-influence** Σ_c η̄_c ‖∇ℓ(z_i; θ_c)‖² over ``baselines.num_checkpoints``
     checkpoints of the first training run (needs saved parameters);
   * **random**: the mean of ``--shuffles`` random orders.
3. Writes ``results/mislabel.{json,csv,png}``: the fraction of the flipped labels found
   against the fraction of the pool checked.
4. With ``--retrain_fractions``: fixes the labels a ranking flags among the first f of the
   pool, fine-tunes the base model again on the whole pool (AdamW, constant lr
   ``collect.learning_rate``, ``collect.epochs`` epochs of batch ``collect.batch_size``) and
   records the test accuracy (argmin of the loss over the label words), beside no fix and
   every label fixed.

``python -m experiments.report`` puts the curve and the tables into EXPERIMENTS.md.
"""

from __future__ import annotations

import csv
import dataclasses
import io as _io
import sys
import time
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from gptjax import io
from gptjax.cli import quiet_orbax, run_reporting_errors
from gptjax.pipeline import queries
from gptjax.pipeline.seeds import parse_seeds, seeded
from gptjax.pipeline.stages import run_pipeline
from gptjax.pipeline.workdir import Workdir

REPORT_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5)


def found_curve(order: np.ndarray, flipped: np.ndarray) -> dict[str, list[float]]:
    """Fraction of the flipped examples found after checking the first k of ``order``
    (k = 0..P), against the fraction checked k / P."""
    flipped = np.asarray(flipped, bool)
    order = np.asarray(order)
    if sorted(order.tolist()) != list(range(len(flipped))):
        raise ValueError("order must be a permutation of the pool ids")
    total = max(int(flipped.sum()), 1)
    found = np.concatenate([[0], np.cumsum(flipped[order])]) / total
    checked = np.arange(len(order) + 1) / len(order)
    return {"checked": checked.tolist(), "found": found.tolist()}


def random_curve(flipped: np.ndarray, shuffles: int, seed: int) -> dict[str, list[float]]:
    """The mean curve of ``shuffles`` random orders (and its std)."""
    rng = np.random.default_rng(seed)
    curves = [found_curve(rng.permutation(len(flipped)), flipped)["found"] for _ in range(shuffles)]
    checked = np.arange(len(flipped) + 1) / len(flipped)
    return {
        "checked": checked.tolist(),
        "found": np.mean(curves, 0).tolist(),
        "found_std": np.std(curves, 0).tolist(),
    }


def gptfluence_self_influence(ow: queries.OpenWorkdir, simulator: str = "gptfluence"):
    """[P] one-step effect of each training example on its own loss (negative: lowers it)."""
    from simulator import influence

    fitted = ow.simulator("loss", simulator)
    p = ow.num_train
    if fitted.train_features is None:
        raise ValueError(f"{simulator} has no features: it cannot score training examples")
    feats = np.asarray(fitted.train_features[:p])
    table = fitted.coef_table(train_ids=np.arange(p), test_features=feats)  # [n+1, P, P]
    diag = np.stack([np.diagonal(t) for t in table])[:, :, None]  # [n+1, P, 1]: i on itself
    y_ref = np.full(1, float(np.mean(ow.y_ref("loss"))))
    eff = influence.one_step_effects(
        diag,
        y_ref,
        order=fitted.order,
        batch_reduce=fitted.config.batch_reduce,
        batch_size=fitted.batch_size,
    )[:, 0]
    return eff


def tracin_self_influence(ow: queries.OpenWorkdir, run: int | None = None) -> np.ndarray:
    """[P] Σ_c η̄_c ‖∇ℓ(z_i; θ_c)‖² over the checkpoints of one run (default: the first
    training run), as `queries.OpenWorkdir.tracin` chooses them."""
    from flax import nnx

    from baselines import GradientEngine, checkpoint_schedule
    from baselines.grads import take
    from baselines.tracin import checkpoint_weights, self_influence
    from gptjax.pipeline import config as config_lib

    run = ow.split["train"][0] if run is None else run
    if not ow.wd.runs.checkpoint_dir(run).is_dir():
        raise ValueError(
            f"run {run} saved no parameters (collect.save_params is "
            f"{ow.config.collect.save_params!r})"
        )
    base, params_at, saved_steps, (pool_tokens, _) = ow.gradient_inputs
    steps = ow.dynamics.curricula.shape[1]
    k = int(ow.config.baselines.num_checkpoints)
    schedule = checkpoint_schedule(saved_steps(run), steps, "k", k=k)
    weights = checkpoint_weights(schedule, ow.dynamics.lr[run])
    states = [params_at(run, step) for step in weights]
    engine = GradientEngine(
        nnx.split(base)[0],
        states[0],
        dataclasses.replace(config_lib.grad_config(ow.config.baselines), layers="all"),
        first_layer=config_lib.first_layer(ow.config, base),
    )
    return self_influence(
        engine, states, list(weights.values()), take(pool_tokens, np.arange(ow.num_train))
    )


def rankings(ow: queries.OpenWorkdir, shuffles: int, seed: int) -> tuple[dict, dict, dict]:
    """({name: order}, {name: curve}, {name: reason it is unavailable})."""
    flipped = np.asarray(ow.pools["flipped"][: ow.num_train], bool)
    orders, unavailable = {}, {}
    try:
        orders["GPTfluence self-influence"] = np.argsort(
            gptfluence_self_influence(ow), kind="stable"
        )
    except (ValueError, queries.QueryError) as err:
        unavailable["GPTfluence self-influence"] = str(err)
    try:
        ranked = queries.mislabel_ranking(ow)["ranking"]
        orders["GPTfluence test harm"] = np.array([r["pool_id"] for r in ranked])
    except (ValueError, queries.QueryError) as err:
        unavailable["GPTfluence test harm"] = str(err)
    try:
        orders["TracIn self-influence"] = np.argsort(-tracin_self_influence(ow), kind="stable")
    except (ValueError, queries.QueryError) as err:
        unavailable["TracIn self-influence"] = str(err)
    curves = {name: found_curve(order, flipped) for name, order in orders.items()}
    curves[f"random ({shuffles} shuffles)"] = random_curve(flipped, shuffles, seed)
    return orders, curves, unavailable


def plot_curves(path: Path, curves: dict[str, dict], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for name, c in curves.items():
        ax.plot(c["checked"], c["found"], label=name)
        if "found_std" in c:
            lo = np.asarray(c["found"]) - np.asarray(c["found_std"])
            hi = np.asarray(c["found"]) + np.asarray(c["found_std"])
            ax.fill_between(c["checked"], lo, hi, alpha=0.2)
    ax.set_xlabel("fraction of the pool checked")
    ax.set_ylabel("fraction of flipped labels found")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = _io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    io.atomic_write_bytes(path, buffer.getvalue())


def curves_csv(curves: dict[str, dict]) -> str:
    names = list(curves)
    out = _io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["fraction_checked", *names])
    checked = next(iter(curves.values()))["checked"]
    for i, x in enumerate(checked):
        writer.writerow([f"{x:.4f}", *(f"{curves[n]['found'][i]:.4f}" for n in names)])
    return out.getvalue()


# ---- retraining after fixing labels ---------------------------------------------------------
def _pools(ow: queries.OpenWorkdir):
    return [queries.example_of_row(r) for r in ow.pools["train"]], [
        queries.example_of_row(r) for r in ow.pools["test"]
    ]


def fixed_examples(train, flipped: np.ndarray, checked: np.ndarray, label_words) -> list:
    """The pool with the flipped labels among ``checked`` ids set back (binary labels)."""
    if len(label_words) != 2:
        raise ValueError("fixing labels needs a task with two label words")
    fix = set(np.asarray(checked).tolist()) & set(np.flatnonzero(flipped).tolist())
    out = []
    for i, e in enumerate(train):
        if i in fix:
            j = 1 - list(label_words).index(e.target)
            e = dataclasses.replace(e, target=label_words[j], label=j)
        out.append(e)
    return out


def retrain_accuracy(ow, examples, test, label_words, seed: int) -> float:
    """Fine-tune the base model on ``examples`` (collect's batch size, epochs, learning rate;
    constant rate) and return its test accuracy over the label words."""
    import jax

    from gptjax.collect.pretrain import pretrain_base
    from gptjax.models.checkpoint import restore_model
    from gptjax.models.losses import per_example_loss
    from gptjax.pipeline.preparation import load_base_model
    from gptjax.tasks import Pools, tokenize_examples

    c = ow.config
    pools = Pools(
        train=[queries.example_of_row(r) for r in ow.pools["train"]],
        unseen=[queries.example_of_row(r) for r in ow.pools["unseen"]],
        test=test,
        flipped=np.asarray(ow.pools["flipped"], bool),
        task_of_train=list(ow.pools.get("task_of_train", [])),
        task_of_test=list(ow.pools.get("task_of_test", [])),
        relatedness=None,
    )
    _, tokenizer = load_base_model(c, pools)
    model = restore_model(ow.wd.model_dir)
    tokens = tokenize_examples(examples, tokenizer, max_len=c.data.max_len).loss_inputs()
    steps = -(-len(examples) // c.collect.batch_size) * c.collect.epochs
    model, _ = pretrain_base(
        model,
        tokens,
        steps=steps,
        batch_size=c.collect.batch_size,
        learning_rate=c.collect.learning_rate,
        seed=seed,
        progress=False,
    )
    losses = []
    loss_fn = jax.jit(per_example_loss)
    for word in label_words:
        asked = [dataclasses.replace(e, target=word) for e in test]
        t = tokenize_examples(asked, tokenizer, max_len=c.data.max_len, pad_to_max=True)
        losses.append(np.asarray(loss_fn(model, **t.loss_inputs())))
    predicted = np.argmin(np.stack(losses), axis=0)
    truth = np.array([list(label_words).index(e.target) for e in test])
    return float((predicted == truth).mean())


def retrain_table(ow, orders: dict, fractions: list[float], seed: int) -> list[dict]:
    from gptjax.tasks import get_task

    train, test = _pools(ow)
    label_words = tuple(get_task(ow.config.data.task).label_words)
    flipped = np.asarray(ow.pools["flipped"][: ow.num_train], bool)
    p = len(train)
    rows = [
        {
            "ranking": "no fix",
            "checked": 0.0,
            "accuracy": retrain_accuracy(ow, train, test, label_words, seed),
        }
    ]
    random_order = np.random.default_rng(seed).permutation(p)
    for name, order in {**orders, "random": random_order}.items():
        for f in fractions:
            checked = np.asarray(order)[: int(round(f * p))]
            fixed = fixed_examples(train, flipped, checked, label_words)
            acc = retrain_accuracy(ow, fixed, test, label_words, seed)
            rows.append({"ranking": name, "checked": f, "accuracy": acc})
            print(f"retrained: {name}, {f:.0%} checked: test accuracy {acc:.3f}", flush=True)
    everything = fixed_examples(train, flipped, np.arange(p), label_words)
    rows.append(
        {
            "ranking": "all labels fixed",
            "checked": 1.0,
            "accuracy": retrain_accuracy(ow, everything, test, label_words, seed),
        }
    )
    return rows


def run(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    shuffles: int = 10,
    retrain_fractions: tuple[float, ...] = (),
) -> dict[str, Any]:
    wd = Workdir(workdir)
    if config.data.label_noise <= 0:
        raise ValueError("config key 'data.label_noise' is 0: there are no flipped labels")
    run_pipeline(config, wd.root)
    ow = queries.open_workdir(wd)
    flipped = np.asarray(ow.pools["flipped"][: ow.num_train], bool)
    start = time.perf_counter()
    orders, curves, unavailable = rankings(ow, shuffles, int(config.seed))
    seconds = {"rankings": round(time.perf_counter() - start, 1)}
    record: dict[str, Any] = {
        "pool_size": ow.num_train,
        "flipped_total": int(flipped.sum()),
        "report_fractions": list(REPORT_FRACTIONS),
        "curves": curves,
        "unavailable": unavailable,
        "orders": {name: np.asarray(o).tolist() for name, o in orders.items()},
    }
    if retrain_fractions:
        start = time.perf_counter()
        record["retrain"] = retrain_table(ow, orders, list(retrain_fractions), int(config.seed))
        seconds["retrain"] = round(time.perf_counter() - start, 1)
    record["seconds"] = seconds
    plot_curves(wd.result("mislabel_curve.png"), curves, f"{config.data.task}: flipped labels")
    io.atomic_write_text(wd.result("mislabel.csv"), curves_csv(curves))
    io.atomic_write_json(wd.result("mislabel.json"), record)
    for name, c in curves.items():
        at = {f: float(np.interp(f, c["checked"], c["found"])) for f in REPORT_FRACTIONS}
        print(f"{name}: " + ", ".join(f"{f:.0%} checked -> {v:.2f} found" for f, v in at.items()))
    return record


def run_seeds(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    seeds: list[int],
    shuffles: int = 10,
    retrain_fractions: tuple[float, ...] = (),
) -> dict[str, dict[str, Any]]:
    """`run` once per seed in ``<workdir>/seed_<s>``; returns {seed: record}."""
    out = {}
    for seed in seeds:
        print(f"=== seed {seed} ===", flush=True)
        out[str(seed)] = run(
            seeded(config, seed), Path(workdir) / f"seed_{seed}", shuffles, retrain_fractions
        )
    return out


def _fractions(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--retrain_fractions: {text!r} is not a list of numbers") from None
    if not all(0 < f <= 1 for f in values):
        raise ValueError(f"--retrain_fractions: {text!r}: each must be in (0, 1]")
    return values


def main(argv: list[str]) -> None:
    from absl import flags

    del argv
    quiet_orbax()
    f = flags.FLAGS

    def study():
        fractions = _fractions(f.retrain_fractions)
        if f.seeds:
            return run_seeds(_CONFIG.value, f.workdir, parse_seeds(f.seeds), f.shuffles, fractions)
        return run(_CONFIG.value, f.workdir, f.shuffles, fractions)

    run_reporting_errors(study, debug=f.debug)


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    _CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
    flags.DEFINE_string("workdir", None, "The experiment's workdir.")
    flags.DEFINE_integer("shuffles", 10, "Random orders averaged for the random ranking.")
    flags.DEFINE_string(
        "retrain_fractions", "", "Comma-separated fractions checked before retraining ('' = no)."
    )
    flags.DEFINE_string(
        "seeds", "", "Comma-separated seeds, one workdir <workdir>/seed_<s> each ('' = one run)."
    )
    flags.DEFINE_bool("debug", False, "Show the traceback of an error.")
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)
    sys.exit(0)
