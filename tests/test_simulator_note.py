"""A fit that kept its initial state, or fell back to early stopping on its training runs,
says so in its results row (issue #11, item 6)."""

import dataclasses

import numpy as np

from gptjax.evaluation import evaluate, results_table
from simulator import FitConfig, fit
from simulator.synthetic import make_synthetic


def _fit(val_runs, **kw):
    syn = make_synthetic(n_runs=8, n_test=6, n_pool=12, subset_size=12, dim=8, seed=0)
    cfg = FitConfig(hidden=8, out_dim=8, lr=3e-3, warmup_steps=5, epochs=3, min_steps=30, **kw)
    sim = fit(
        "gptfluence",
        syn.curricula,
        syn.y,
        syn.train_features,
        syn.test_features,
        np.arange(4),
        val_runs,
        cfg,
    )
    return sim, syn


def test_note_for_initial_state_and_fallback():
    sim, syn = _fit(np.arange(4, 6))
    summary = sim.history[-1]
    assert summary["stopped_on"] == "validation" and summary["epochs_run"] >= 1
    assert summary["best_epoch"] > 0 and sim.note == "" and sim.result_fields() == {}

    stuck = dataclasses.replace(sim, history=sim.history[:-1] + [summary | {"best_epoch": 0}])
    assert "best epoch 0" in stuck.note and "initial state" in stuck.note
    test = np.arange(6, 8)
    row = evaluate(stuck.rollout(syn.curricula[test], syn.y[test][:, 0]), syn.y[test])
    md = results_table({"gptfluence": row | stuck.result_fields()})
    assert "| gptfluence * |" in md and "early-stopped at its initial state" in md

    fallback, _ = _fit(np.arange(0))
    assert fallback.history[-1]["stopped_on"] == "training"
    assert "fallback" in fallback.note and "training runs" in fallback.note


def test_older_histories_have_no_note():
    sim, _ = _fit(np.arange(4, 6))
    assert dataclasses.replace(sim, history=[]).note == ""
    old = [{"best_epoch": 3, "best_val_mse": 0.1}]  # written before the note existed
    assert dataclasses.replace(sim, history=old).note == ""
