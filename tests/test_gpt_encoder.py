"""GPTfluence on features from the base GPT model's own hidden states
(``simulator.encoder = "gpt"``): the features, their cache, the simulate stage on the tiny
config, and the config check."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import numpy as np
import pytest

from gptjax import paths
from gptjax.pipeline import Workdir, prepare, run_pipeline
from gptjax.pipeline.config import validate
from simulator import features as feats_lib
from simulator.training import restore_verified

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "tests" / "configs" / "tiny.py"

if not paths.pythia_tokenizer().is_file():
    pytest.skip("the Pythia tokenizer is not installed", allow_module_level=True)


def gpt_config(stages: str = "collect,simulate,report"):
    c = runpy.run_path(str(TINY))["get_config"]()
    c.stages = stages
    c.simulator.models = "gptfluence"
    c.simulator.encoder = "gpt"
    g = c.simulator.gptfluence
    g.epochs, g.min_steps, g.warmup_steps, g.batch_size = 3, 0, 5, 32
    g.hidden = g.out_dim = 16
    c.baselines.methods = "persistence,mean_trajectory"
    return c


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("gpt_encoder")
    config = gpt_config()
    results = run_pipeline(config, workdir)
    prep = prepare(config, Workdir(workdir))
    return workdir, results, prep


def test_simulate_stage_fits_on_the_gpt_hidden_states(finished):
    workdir, results, prep = finished
    hidden = prep.model.config.hidden_size
    row = results["simulate"]["loss"]["gptfluence"]
    assert np.isfinite(row["mse_mean"]) and row["n_nonfinite"] == 0
    fitted = restore_verified(Workdir(workdir).simulator_dir("loss", "gptfluence"))
    n_pool = len(prep.pools.pool)
    n_test = len(prep.pools.test)
    assert fitted.train_features.shape == (n_pool, hidden)  # 32, not MiniLM's 384
    assert fitted.test_features.shape == (n_test, hidden)
    # The features are the base model's mean-pooled final hidden states of each example's
    # own token row (the rows the runs train and evaluate on).
    sides = [(fitted.train_features, prep.pool_tokens), (fitted.test_features, prep.test_tokens)]
    for got, tokens in sides:
        expected = feats_lib.gpt_features(prep.model, tokens.input_ids, tokens.attention_mask)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    dyn = Workdir(workdir).runs.load(6)
    pred = fitted.rollout(dyn.curricula[[4, 5]], dyn.metrics["loss"][[4, 5], 0])
    assert pred.shape == (2, dyn.curricula.shape[1] + 1, n_test) and np.isfinite(pred).all()
    assert "gptfluence" in Workdir(workdir).report_file.read_text()


def test_gpt_features_pool_real_tokens_only(finished):
    """Mean over attended positions of the final-norm hidden states: a row's features do not
    depend on its right padding or on the other rows of its batch."""
    _, _, prep = finished
    tokens = prep.test_tokens
    ids, mask = tokens.input_ids[:5], tokens.attention_mask[:5]
    together = feats_lib.gpt_features(prep.model, ids, mask, batch_size=2)
    for i in range(5):
        n = int(mask[i].sum())
        alone = feats_lib.gpt_features(prep.model, ids[i : i + 1, :n], mask[i : i + 1, :n])
        hidden, _ = prep.model(ids[i : i + 1, :n])
        np.testing.assert_allclose(together[i], alone[0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(alone[0], np.asarray(hidden[0]).mean(0), rtol=1e-4, atol=1e-5)
    last = feats_lib.gpt_features(prep.model, ids, mask, pooling="last")
    n0 = int(mask[0].sum())
    np.testing.assert_allclose(last[0], np.asarray(prep.model(ids[:1, :n0])[0][0, -1]), atol=1e-5)


def test_gpt_feature_cache_is_keyed_by_the_model(finished, tmp_path, monkeypatch):
    _, _, prep = finished
    ids, mask = prep.test_tokens.input_ids, prep.test_tokens.attention_mask
    first = feats_lib.cached_gpt_features(tmp_path, prep.model, ids, mask)
    assert len(list(tmp_path.glob("features.*.npy"))) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("cached features were computed again")

    monkeypatch.setattr(feats_lib, "gpt_features", refuse)
    np.testing.assert_array_equal(
        feats_lib.cached_gpt_features(tmp_path, prep.model, ids, mask), first
    )
    monkeypatch.undo()
    # Another model (the same architecture, other parameters) is another cache entry.
    from flax import nnx

    other = nnx.clone(prep.model)
    other.final_norm.scale.value = other.final_norm.scale.value * 2.0
    second = feats_lib.cached_gpt_features(tmp_path, other, ids, mask)
    assert len(list(tmp_path.glob("features.*.npy"))) == 2
    assert not np.allclose(first, second)


def test_config_refuses_a_bad_encoder():
    config = gpt_config()
    validate(config)
    config.simulator.encoder = "bert"
    with pytest.raises(ValueError, match=r"config key 'simulator.encoder' must be minilm \| gpt"):
        validate(config)
    config = gpt_config()
    config.simulator.pooling = "cls"  # a MiniLM pooling
    with pytest.raises(
        ValueError,
        match=re.escape("config key 'simulator.pooling' must be mean | last with encoder gpt"),
    ):
        validate(config)
    config = gpt_config()
    config.simulator.encoder = "minilm"
    config.simulator.pooling = "last"
    with pytest.raises(
        ValueError, match=re.escape("'simulator.pooling' must be mean | cls | pooler")
    ):
        validate(config)
