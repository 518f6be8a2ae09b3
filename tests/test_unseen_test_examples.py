"""Test examples held out of the simulators' fit (``simulator.unseen_test``, the paper's
Table 11): the fit never sees their trajectories, GPTfluence predicts them from their
features, Simfluence is not applicable, the mean trajectory is marked as an oracle, and every
results file carries their figures apart from the seen test examples'."""

from __future__ import annotations

import json
import runpy
import shutil
from pathlib import Path

import numpy as np
import pytest

import gptjax.pipeline.stages as stages
from gptjax import paths
from gptjax.pipeline import Workdir, run_pipeline
from gptjax.pipeline.config import validate
from gptjax.store import RunStore
from simulator import training
from simulator.training import restore_verified

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "tests" / "configs" / "tiny.py"
UNSEEN = 3  # of the tiny config's 8 test examples
KEY = stages.unseen_test_key("loss")

if not paths.pythia_tokenizer().is_file():
    pytest.skip("the Pythia tokenizer is not installed", allow_module_level=True)
try:
    paths.minilm_dir()
except FileNotFoundError:
    pytest.skip("all-MiniLM-L6-v2 is not installed", allow_module_level=True)


def unseen_config(stages_: str = "collect,simulate,baselines,report"):
    c = runpy.run_path(str(TINY))["get_config"]()
    c.stages = stages_
    c.simulator.models = "gptfluence,simfluence,gptfluence_anchored"
    c.simulator.unseen_test = UNSEEN
    for section in (c.simulator.gptfluence, c.simulator.simfluence):
        section.epochs, section.min_steps, section.warmup_steps, section.batch_size = 3, 0, 5, 32
    c.simulator.gptfluence.hidden = c.simulator.gptfluence.out_dim = 16
    c.baselines.methods = "persistence,mean_trajectory"
    return c


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("unseen_test")
    return workdir, run_pipeline(unseen_config(), workdir)


def test_fit_never_sees_the_held_out_trajectories(finished, monkeypatch):
    """Every simulator is fitted on the 5 seen test examples; the arrays it is given are the
    seen columns, and perturbing the held-out columns of every run (training runs included)
    leaves the fitted simulators and the seen figures unchanged."""
    workdir, results = finished
    wd = Workdir(workdir)
    n_test = 8
    for name in ("gptfluence", "simfluence", "gptfluence_anchored"):
        fitted = restore_verified(wd.simulator_dir("loss", name))
        assert fitted.n_test == n_test - UNSEEN, name
    assert restore_verified(wd.simulator_dir("loss", "gptfluence")).test_features.shape[0] == 5

    # Refit on a copy whose held-out trajectories are changed everywhere.
    copy = workdir.parent / (workdir.name + "_perturbed")
    shutil.copytree(workdir, copy)
    shutil.rmtree(copy / "simulators")
    original_load = RunStore.load

    def perturbed_load(self, *args, **kwargs):
        dyn = original_load(self, *args, **kwargs)
        dyn.metrics["loss"][..., n_test - UNSEEN :] += 5.0
        return dyn

    given: list[tuple[int, int]] = []
    original_fit = stages.fit_or_restore

    def spy(kind, cfg, curricula, y, train_features, test_features, *args, **kwargs):
        given.append((y.shape[2], test_features.shape[0]))
        return original_fit(kind, cfg, curricula, y, train_features, test_features, *args, **kwargs)

    fits: list[str] = []
    original_train = training.fit

    def counted_fit(kind, *args, **kwargs):
        fits.append(kind)
        return original_train(kind, *args, **kwargs)

    monkeypatch.setattr(RunStore, "load", perturbed_load)
    monkeypatch.setattr(stages, "fit_or_restore", spy)
    monkeypatch.setattr(training, "fit", counted_fit)
    again = run_pipeline(unseen_config("simulate"), copy)["simulate"]
    assert given == [(5, 5)] * 3
    assert fits == ["gptfluence", "simfluence", "gptfluence"]  # refitted, not restored
    for name in ("gptfluence", "simfluence", "gptfluence_anchored", "persistence"):
        for key in ("mse_mean", "final_spearman_mean", "lds_mean"):
            a, b = results["simulate"]["loss"][name][key], again["loss"][name][key]
            assert a == pytest.approx(b, rel=1e-6, nan_ok=True), (name, key)
    for name in ("gptfluence", "simfluence"):
        a = restore_verified(wd.simulator_dir("loss", name))
        b = restore_verified(Workdir(copy).simulator_dir("loss", name))
        np.testing.assert_allclose(a.coef_table(), b.coef_table(), rtol=1e-6, atol=1e-7)
    # The held-out figures did see the change: their true values moved by 5.
    assert (
        again[KEY]["gptfluence"]["mse_mean"]
        > results["simulate"][KEY]["gptfluence"]["mse_mean"] + 1.0
    )


def test_unseen_test_examples_are_scored_apart(finished):
    workdir, results = finished
    sim, base = results["simulate"], results["baselines"]
    runs = 2  # the tiny config's held-out test runs
    for rows in (sim["loss"], base["loss"]):
        for row in rows.values():
            assert row["n_trajectories"] == runs * (8 - UNSEEN)
    unseen = sim[KEY]
    gpt = unseen["gptfluence"]
    assert np.isfinite(gpt["mse_mean"]) and gpt["n_trajectories"] == runs * UNSEEN
    assert gpt["n_nonfinite"] == 0
    for name in ("simfluence", "gptfluence_anchored"):
        assert unseen[name]["not_applicable"], name
        assert "mse_mean" in unseen[name] and np.isnan(unseen[name]["mse_mean"])
    assert "per test example" in unseen["simfluence"]["reason"]
    assert "mean_trajectory" not in unseen and "mean_trajectory" not in base[KEY]
    for rows in (unseen, base[KEY]):
        oracle = rows[stages.MEAN_ORACLE]
        assert oracle["n_trajectories"] == runs * UNSEEN and oracle["note"].startswith("oracle")
        assert rows["persistence"]["n_trajectories"] == runs * UNSEEN
    wd = Workdir(workdir)
    saved = json.loads(wd.result("simulators.json").read_text())
    assert saved["unseen_test_examples"] == [5, 6, 7] and saved["seen_test_examples"] == [
        0,
        1,
        2,
        3,
        4,
    ]
    assert set(saved["results"]) == {"loss", KEY}
    assert set(json.loads(wd.result("baselines.json").read_text())["results"]) == {"loss", KEY}
    for name in ("simulators_loss_unseen_test.md", "simulators_loss_unseen_test.png"):
        assert wd.result(name).stat().st_size > 0, name
    table = wd.result("simulators_loss_unseen_test.md").read_text()
    assert "| gptfluence |" in table and "Not applicable: simfluence" in table
    assert f"| {stages.MEAN_ORACLE} * |" in table
    report = wd.report_file.read_text()
    assert f"## {KEY} (held-out test runs)" in report and "## loss (held-out test runs)" in report


def test_config_refuses_too_many_unseen_test_examples():
    config = unseen_config()
    validate(config)
    config.simulator.unseen_test = 8  # every test example
    with pytest.raises(ValueError, match=r"config key 'simulator.unseen_test' must be in 0\.\.7"):
        validate(config)
    config.simulator.unseen_test = -1
    with pytest.raises(ValueError, match="simulator.unseen_test"):
        validate(config)


def test_unseen_sst2_variants():
    """configs/unseen_sst2.py gives the three columns of Table 11 (as configs)."""
    module = runpy.run_path(str(REPO / "configs" / "unseen_sst2.py"))
    got = {}
    for variant in module["VARIANTS"]:
        c = module["get_config"](variant)
        validate(c)
        got[variant] = (c.data.unseen_size > 0, c.collect.unseen_runs > 0, c.simulator.unseen_test)
    assert got == {"train": (True, True, 0), "test": (False, False, 16), "both": (True, True, 16)}
    assert module["get_config"]().to_dict() == module["get_config"]("train").to_dict()
