"""Influence queries recover the known ground truth of synthetic dynamics."""

import numpy as np
import pytest

from gptjax.evaluation import spearman
from simulator import fit
from simulator import influence as inf
from simulator.rollout import rollout_table
from simulator.synthetic import make_synthetic

TRAIN, VAL, TEST = np.arange(16), np.arange(16, 20), np.arange(20, 28)


@pytest.fixture(scope="module")
def case():
    syn = make_synthetic(
        n_runs=28, n_test=24, n_pool=48, subset_size=40, dim=16, n_harmful=4, harm=0.4, seed=1
    )
    cfg = {
        "hidden": 32,
        "out_dim": 32,
        "lr": 3e-3,
        "warmup_steps": 50,
        "epochs": 25,
        "patience": 100,
    }
    fitted = fit(
        "gptfluence", syn.curricula, syn.y, syn.train_features, syn.test_features, TRAIN, VAL, cfg
    )
    return syn, fitted


def test_one_step_effects_recover_ground_truth(case):
    syn, fitted = case
    y_ref = syn.y[TRAIN].mean((0, 1))
    true = inf.one_step_effects(syn.table, y_ref, order=1, batch_reduce="sum", batch_size=4)
    got = inf.fitted_effects(fitted, "one_step", y_ref=y_ref)
    rho = spearman(got, true, axis=0)  # per test example, across training examples
    print(
        f"\none-step influence rank correlation: mean {np.nanmean(rho):.3f}, "
        f"min {np.nanmin(rho):.3f}"
    )
    assert np.nanmean(rho) > 0.9


def test_removal_effects_recover_ground_truth_and_match_brute_force(case):
    syn, fitted = case
    c, y0 = syn.curricula[TEST], syn.y[TEST, :1]
    true = inf.removal_effects(syn.table, c, y0, order=1, batch_reduce="sum")
    got = inf.fitted_effects(fitted, "removal", curricula=c, y_init=y0)
    rho = spearman(got, true, axis=0)
    print(f"\nremoval influence rank correlation: mean {np.nanmean(rho):.3f}")
    assert np.nanmean(rho) > 0.9
    # Brute force for one example: replace its slots by a null example, roll out again.
    i = int(c[0, 0, 0])
    null = np.zeros((2, 1, syn.table.shape[2]), np.float32)
    null[0] = 1 / 4
    ext = np.concatenate([syn.table, null], axis=1)
    cf = np.where(c == i, ext.shape[1] - 1, c)
    base = np.asarray(rollout_table(ext, c, y0, order=1))[:, -1]
    without = np.asarray(rollout_table(ext, cf, y0, order=1))[:, -1]
    np.testing.assert_allclose(true[i], (base - without).mean(0), rtol=1e-4, atol=1e-5)
    absent = np.setdiff1d(np.arange(syn.table.shape[1]), np.unique(c))
    if absent.size:
        np.testing.assert_allclose(true[absent], 0.0, atol=1e-6)


def test_rankings_find_harmful_examples(case):
    syn, fitted = case
    y_ref = syn.y[TRAIN].mean((0, 1))
    scores = inf.fitted_effects(fitted, "one_step", y_ref=y_ref)
    ranked = inf.mislabel_ranking(scores)
    hits = np.intersect1d(ranked[:4], syn.harmful).size
    print(f"\nharmful {syn.harmful}, top-4 suspects {ranked[:4]}")
    assert hits >= 3
    helpful, harmful = inf.top_k(scores, test_id=0, k=5)
    assert scores[helpful[0], 0] == scores[:, 0].min()  # a loss: helpful lowers it
    assert scores[harmful[0], 0] == scores[:, 0].max()
    helpful_b, _ = inf.top_k(scores, test_id=0, k=5, higher_is_better=True)
    assert helpful_b[0] == harmful[0]


def test_counterfactual_curriculum(case):
    syn, fitted = case
    c, y0 = syn.curricula[TEST[:2]].copy(), syn.y[TEST[:2], 0]
    harmful = np.isin(c, syn.harmful)
    cleaned = np.where(harmful, -1, c)  # drop the harmful examples
    before = inf.counterfactual(fitted, c, y0)[:, -1]
    after = inf.counterfactual(fitted, cleaned, y0)[:, -1]
    assert before.shape == after.shape == (2, 24)
    assert not np.allclose(before, after)
