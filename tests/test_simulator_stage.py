"""The simulate stage on synthetic dynamics: results, files, resumption."""

import json

import numpy as np
import pytest

import simulator.stage as stage
from simulator.synthetic import make_synthetic


@pytest.fixture(scope="module")
def dyn():
    syn = make_synthetic(
        n_runs=26,
        n_test=16,
        n_pool=40,
        n_unseen=8,
        unseen_runs=3,
        subset_size=32,
        dim=12,
        n_invalid=1,
        seed=4,
    )
    sparse = syn.y.copy() * 0.5
    steps = np.arange(sparse.shape[1])
    sparse[:, (steps % 3 != 0) & (steps != steps[-1])] = np.nan  # measured every 3 steps
    return {
        "curricula": syn.curricula,
        "metrics": {"loss": syn.y, "bleu": sparse},
        "valid": syn.valid,
        "train_features": syn.train_features,
        "test_features": syn.test_features,
        "lr": None,
    }


def _cfg():
    c = stage.default_config()
    for name in ("gptfluence", "simfluence"):
        c[name].epochs = 8
        c[name].patience = 100
        c[name].warmup_steps = 30
    c.gptfluence.hidden = 24
    c.gptfluence.out_dim = 24
    c.gptfluence.lr = 3e-3
    return c


SPLIT = {"train": list(range(14)), "val": list(range(14, 17)), "test": list(range(17, 26))}


def test_run_simulators_writes_results_and_resumes(dyn, tmp_path, monkeypatch):
    results = stage.run_simulators(dyn, SPLIT, _cfg(), tmp_path)
    assert set(results) == {"loss", "bleu"}
    for metric, rows in results.items():
        assert set(rows) == {"gptfluence", "simfluence", "persistence", "mean_trajectory"}
        g = rows["gptfluence"]["mse_mean"]
        assert g < rows["persistence"]["mse_mean"] and g < rows["mean_trajectory"]["mse_mean"]
        for ext in ("md", "csv", "png"):
            assert (tmp_path / "results" / f"simulators_{metric}.{ext}").stat().st_size > 0
    saved = json.loads((tmp_path / "results" / "simulators.json").read_text())
    assert saved["loss"]["gptfluence"]["mse_mean"] == pytest.approx(
        results["loss"]["gptfluence"]["mse_mean"]
    )
    md = (tmp_path / "results" / "simulators_loss.md").read_text()
    assert "| gptfluence |" in md and "| mean_trajectory |" in md

    def no_fit(*a, **k):
        raise AssertionError("a checkpointed simulator was refitted")

    monkeypatch.setattr(stage, "fit", no_fit)
    again = stage.run_simulators(dyn, SPLIT, _cfg(), tmp_path)
    assert again["loss"]["gptfluence"] == results["loss"]["gptfluence"]
    changed = _cfg()
    changed.gptfluence.lr = 1e-3  # a different setting is fitted anew
    changed.models = "gptfluence"
    changed.metrics = "loss"
    with pytest.raises(AssertionError, match="refitted"):
        stage.run_simulators(dyn, SPLIT, changed, tmp_path)


def test_default_config_and_model_names():
    c = stage.default_config()
    assert c.gptfluence.batch_size == 128 and c.gptfluence.order == 1
    assert c.models == "gptfluence,simfluence" and c.pooling == "mean"
    kind, settings = stage._model_settings("gptfluence_concat", c)
    assert kind == "gptfluence" and settings["variant"] == "concat"
    with pytest.raises(ValueError):
        stage._model_settings("tracin", c)
