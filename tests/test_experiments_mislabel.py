"""experiments.mislabel: the found-vs-checked curves, the label fixing, and the whole study on
a tiny noisy demo collection (collection, GPTfluence fit, both self-influence rankings,
retraining)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from experiments import mislabel
from gptjax.tasks import Example

REPO = Path(__file__).resolve().parent.parent


def test_found_curve_counts_flipped_examples_in_rank_order():
    flipped = np.array([0, 1, 0, 1], bool)
    c = mislabel.found_curve(np.array([1, 0, 3, 2]), flipped)
    assert c["checked"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert c["found"] == [0.0, 0.5, 0.5, 1.0, 1.0]
    perfect = mislabel.found_curve(np.array([3, 1, 0, 2]), flipped)["found"]
    assert perfect[2] == 1.0
    with pytest.raises(ValueError, match="permutation"):
        mislabel.found_curve(np.array([0, 0, 1, 2]), flipped)


def test_random_curve_is_near_the_diagonal():
    flipped = np.zeros(200, bool)
    flipped[::5] = True
    c = mislabel.random_curve(flipped, shuffles=10, seed=0)
    found = np.asarray(c["found"])
    assert found[0] == 0.0 and found[-1] == 1.0
    assert np.abs(found - np.asarray(c["checked"])).max() < 0.2
    assert np.asarray(c["found_std"]).max() > 0  # the shuffles differ


def test_fixed_examples_set_back_only_checked_flips():
    words = (" negative", " positive")
    train = [
        Example(f"x{i}", words[i % 2], "sst2", i % 2, (), f"x{i}", f"sst2:{i}") for i in range(4)
    ]
    flipped = np.array([1, 1, 0, 0], bool)
    fixed = mislabel.fixed_examples(train, flipped, np.array([1, 2]), words)
    assert [e.target for e in fixed] == [" negative", " negative", " negative", " positive"]
    assert fixed[1].label == 0 and fixed[0] is train[0]
    with pytest.raises(ValueError, match="two label words"):
        mislabel.fixed_examples(train, flipped, np.array([0]), (" a", " b", " c"))


def test_curves_csv_has_one_column_per_ranking():
    flipped = np.array([1, 0], bool)
    curves = {"a": mislabel.found_curve(np.array([0, 1]), flipped)}
    text = mislabel.curves_csv(curves)
    assert text.splitlines() == ["fraction_checked,a", "0.0000,0.0000", "0.5000,1.0000"] + [
        "1.0000,1.0000"
    ]


def tiny_noisy_config():
    spec = importlib.util.spec_from_file_location("tiny", REPO / "tests" / "configs" / "tiny.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config()
    c.stages = "collect,simulate"
    c.data.label_noise = 0.25
    c.collect.save_params = "evenly:2"
    c.simulator.models = "gptfluence"
    c.simulator.gptfluence.epochs = 2
    c.simulator.gptfluence.min_steps = 20
    c.simulator.gptfluence.warmup_steps = 2
    c.baselines.num_checkpoints = 2
    return c


def test_the_study_on_a_tiny_noisy_collection(tmp_path):
    record = mislabel.run(tiny_noisy_config(), tmp_path / "wd", shuffles=3)
    assert record["pool_size"] == 24 and record["flipped_total"] == 6
    assert record["unavailable"] == {}
    for name in ("GPTfluence self-influence", "GPTfluence test harm", "TracIn self-influence"):
        assert sorted(record["orders"][name]) == list(range(24))
        assert record["curves"][name]["found"][-1] == 1.0
    assert "random (3 shuffles)" in record["curves"]
    assert "retrain" not in record
    results = tmp_path / "wd" / "results"
    for name in ("mislabel.json", "mislabel.csv", "mislabel_curve.png"):
        assert (results / name).is_file()
    assert (results / "mislabel_curve.png").read_bytes()[:4] == b"\x89PNG"

    # Retraining (the same workdir, so nothing is collected again): with no fraction
    # checked, the rows are the two ends, no fix and every label fixed.
    ow = mislabel.queries.open_workdir(tmp_path / "wd")
    rows = mislabel.retrain_table(ow, {}, [], seed=0)
    assert [(r["ranking"], r["checked"]) for r in rows] == [
        ("no fix", 0.0),
        ("all labels fixed", 1.0),
    ]
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)


def test_a_config_without_noise_is_refused(tmp_path):
    c = tiny_noisy_config()
    c.data.label_noise = 0.0
    with pytest.raises(ValueError, match="label_noise"):
        mislabel.run(c, tmp_path / "wd")


def test_retrain_fractions_are_checked():
    assert mislabel._fractions("0.2, 0.4") == (0.2, 0.4)
    assert mislabel._fractions("") == ()
    for bad in ("abc", "0", "1.5"):
        with pytest.raises(ValueError, match="retrain_fractions"):
            mislabel._fractions(bad)
