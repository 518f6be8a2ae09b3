"""Fitting once and reusing: fit_or_restore on synthetic dynamics (measured every step, and
every 3 steps), and the simulator names a config may list."""

import dataclasses

import numpy as np
import pytest

import simulator.training as fit_module
from gptjax.evaluation import evaluate, mean_trajectory, persistence
from simulator import SIMFLUENCE_DEFAULTS, FitConfig, fit_or_restore, method_config
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


SETTINGS = {
    "gptfluence": FitConfig(
        epochs=8, patience=100, warmup_steps=30, hidden=24, out_dim=24, lr=3e-3
    ),
    "simfluence": dataclasses.replace(SIMFLUENCE_DEFAULTS, epochs=8, patience=100, warmup_steps=30),
}
SPLIT = {"train": list(range(14)), "val": list(range(14, 17)), "test": list(range(17, 26))}


def _fit_all(dyn, root):
    rows = {}
    test = [r for r in SPLIT["test"] if dyn["valid"][r]]
    for metric, y in dyn["metrics"].items():
        true = y[test]
        rows[metric] = {}
        for kind, cfg in SETTINGS.items():
            fitted = fit_or_restore(
                kind,
                cfg,
                dyn["curricula"],
                y,
                dyn["train_features"],
                dyn["test_features"],
                SPLIT,
                root / metric / kind,
                valid=dyn["valid"],
            )
            pred = fitted.rollout(dyn["curricula"][test], true[:, :1])
            rows[metric][kind] = evaluate(pred, true)
        rows[metric]["persistence"] = evaluate(persistence(true), true)
        rows[metric]["mean_trajectory"] = evaluate(mean_trajectory(y[SPLIT["train"]], true), true)
    return rows


def test_fit_once_then_restore(dyn, tmp_path, monkeypatch):
    results = _fit_all(dyn, tmp_path)
    for rows in results.values():
        g = rows["gptfluence"]["mse_mean"]
        assert g < rows["persistence"]["mse_mean"] and g < rows["mean_trajectory"]["mse_mean"]

    def no_fit(*a, **k):
        raise AssertionError("a saved simulator was refitted")

    monkeypatch.setattr(fit_module, "fit", no_fit)
    again = _fit_all(dyn, tmp_path)
    assert again["loss"]["gptfluence"] == results["loss"]["gptfluence"]
    SETTINGS["gptfluence"] = dataclasses.replace(SETTINGS["gptfluence"], lr=1e-3)
    try:
        with pytest.raises(AssertionError, match="refitted"):  # other settings: fitted anew
            _fit_all(dyn, tmp_path)
    finally:
        SETTINGS["gptfluence"] = dataclasses.replace(SETTINGS["gptfluence"], lr=3e-3)


@pytest.mark.parametrize("damaged", ["state", "meta.json", "fit_key.json"])
def test_damaged_simulator_is_fitted_again(dyn, tmp_path, capsys, damaged):
    _fit_all(dyn, tmp_path)
    folder = tmp_path / "loss" / "gptfluence"
    if damaged == "state":
        files = [p for p in (folder / "state").rglob("*") if p.is_file()]
        blob = max(files, key=lambda p: p.stat().st_size)
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0xFF
        blob.write_bytes(bytes(data))
    else:
        (folder / damaged).write_text("{garbled")
    capsys.readouterr()
    again = _fit_all(dyn, tmp_path)
    said = capsys.readouterr().out
    assert "loss/gptfluence" in said and "fitting it again" in said
    assert said.count("fitting it again") == 1  # the undamaged ones are restored
    assert np.isfinite(again["loss"]["gptfluence"]["mse_mean"])


def test_method_names_and_settings_checks():
    kind, cfg = method_config("gptfluence_concat", {"order": 2}, {})
    assert kind == "gptfluence" and cfg.variant == "concat" and cfg.order == 2
    assert cfg.hidden == 768 and cfg.out_dim == 100  # the paper's sizes for the variant
    kind, cfg = method_config("simfluence", {}, SIMFLUENCE_DEFAULTS)
    assert kind == "simfluence" and cfg.lr == SIMFLUENCE_DEFAULTS.lr
    with pytest.raises(ValueError, match="unknown simulator"):
        method_config("tracin", {}, {})
    for bad in ({"order": 0}, {"epochs": -3}, {"variant": "sum"}, {"anchor": "median"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            FitConfig(**bad)


def test_settings_added_later_keep_earlier_fit_keys():
    """The settings part of a fit key: repr(FitConfig) without the fields added after
    simulators were first saved while they hold their defaults, so a saved simulator is
    restored after such a field is added; set, the field is part of the key."""
    cfg = SETTINGS["gptfluence"]
    key = fit_module.settings_key(cfg)
    for name in fit_module._ADDED_LATER:
        assert f"{name}=" not in key
    assert key == repr(cfg).replace(", kernel_dim=0, kernel_mlp=True", "")
    kernel = dataclasses.replace(cfg, kernel_dim=4, batch_reduce="mean", kernel_mlp=False)
    assert "kernel_dim=4" in fit_module.settings_key(kernel)
    assert "kernel_mlp=False" in fit_module.settings_key(kernel)
