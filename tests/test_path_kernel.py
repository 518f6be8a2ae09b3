"""The gradient kernel along the training runs' mean path (`gptjax.pipeline.path_kernel`):
the kernel against a direct jax.grad computation with the Adam preconditioner written out,
the choice of steps, the cache, the memory guard and the base-model fallback."""

from __future__ import annotations

import runpy
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gptjax import paths
from gptjax.collect.checkpoints import params_reader
from gptjax.models.losses import per_example_loss
from gptjax.pipeline import Workdir, prepare, run_pipeline
from gptjax.pipeline import path_kernel as pk
from gptjax.pipeline.stages import run_split
from gptjax.tasks.tokenize import TOKEN_FIELDS

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "tests" / "configs" / "tiny.py"


def test_path_steps_are_evenly_spread_over_the_saved_steps():
    assert pk.path_steps(range(25), 24, 8) == [0, 3, 6, 9, 12, 15, 18, 21]
    assert pk.path_steps(range(25), 24, 1) == [0]
    assert pk.path_steps([0, 12, 24], 24, 8) == [0, 12]  # fewer saved: all below T
    assert pk.path_steps([], 24, 4) == [0]  # nothing saved: the base model
    assert pk.path_steps([0, 5, 10, 15, 20], 24, 2) == [0, 10]
    with pytest.raises(ValueError, match="at least one step"):
        pk.path_steps(range(5), 4, 0)


def test_kernel_at_is_the_adam_preconditioned_centred_inner_product():
    rng = np.random.default_rng(0)
    pool = rng.standard_normal((7, 11)).astype(np.float32)
    test = rng.standard_normal((3, 11)).astype(np.float32)
    mean = pool.astype(np.float64).mean(0)
    var = ((pool - mean) ** 2).mean(0)
    want = ((pool - mean) / (np.sqrt(mean**2 + var / 4) + pk.ADAM_EPS)) @ test.T
    np.testing.assert_allclose(pk.kernel_at(pool, test, 4, "adam"), want, rtol=1e-5)
    np.testing.assert_allclose(pk.kernel_at(pool, test, 4, "none"), (pool - mean) @ test.T, 1e-5)
    with pytest.raises(ValueError, match="precondition must be adam | none"):
        pk.kernel_at(pool, test, 4, "sgd")


def _config():
    c = runpy.run_path(str(TINY))["get_config"]()
    c.stages = "collect"
    c.simulator.kernel_checkpoints = 3
    return c


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    if not paths.pythia_tokenizer().is_file():
        pytest.skip("the Pythia tokenizer is not installed")
    workdir = tmp_path_factory.mktemp("path_kernel")
    config = _config()
    run_pipeline(config, workdir)
    wd = Workdir(workdir)
    prep = prepare(config, wd)
    dyn = wd.runs.load(config.collect.num_runs, expect=prep.run_expect)
    return config, wd, prep, run_split(config, dyn)["train"], dyn.curricula.shape[1]


def _direct_kernel(config, wd, prep, runs, steps):
    """K by hand: the runs' checkpoints averaged leaf by leaf, jax.grad of every example's
    own loss, the Adam second moment of a batch's mean gradient, all in float64 from there."""
    graphdef, base = nnx.split(prep.model)
    params_at, _ = params_reader(wd.runs, prep.model)
    batch = config.collect.batch_size

    def loss(state, ex):
        return per_example_loss(nnx.merge(graphdef, state), *(ex[k][None] for k in TOKEN_FIELDS))[0]

    grad = jax.jit(jax.grad(loss))

    def grads(state, tokens):
        rows = []
        for m in range(len(tokens["input_ids"])):
            ex = {k: jnp.asarray(tokens[k][m]) for k in TOKEN_FIELDS}
            leaves = jax.tree.leaves(grad(state, ex))
            rows.append(np.concatenate([np.asarray(g, np.float64).ravel() for g in leaves]))
        return np.stack(rows)

    total = 0.0
    for s in steps:
        if s == 0:
            state = base
        else:
            saved = [params_at(int(r), s) for r in runs]
            state = jax.tree.map(lambda *xs: np.mean(np.stack(xs), 0), *saved)
        gp = grads(state, prep.pool_tokens.loss_inputs())
        gt = grads(state, prep.test_tokens.loss_inputs())
        mean = gp.mean(0)
        second = mean**2 + ((gp - mean) ** 2).mean(0) / batch
        total = total + ((gp - mean) / (np.sqrt(second) + pk.ADAM_EPS)) @ gt.T
    return total / len(steps)


def test_path_kernel_matches_direct_gradients(collected, capsys):
    config, wd, prep, runs, num_steps = collected
    _, saved_steps = params_reader(wd.runs, prep.model)
    steps = pk.path_steps(saved_steps(int(runs[0])), num_steps, 3)
    assert len(steps) > 1  # the tiny config saves parameters: the path has later steps
    feats = pk.path_kernel_features(config, wd, prep, runs, num_steps)
    want = _direct_kernel(config, wd, prep, runs, steps)
    r = np.sqrt(np.mean(want**2))
    np.testing.assert_allclose(feats["train"], want / r, rtol=2e-3, atol=2e-4)
    np.testing.assert_array_equal(feats["test"], np.eye(config.data.test_size))
    assert "kernel_checkpoints" in capsys.readouterr().out  # fewer saved steps than asked


def test_streamed_kernel_matches_direct_gradients(collected, monkeypatch):
    # A budget the pool's and the test set's gradients together exceed, but twice the test
    # set's fits: the pool's gradients are streamed (twice) instead of held.
    config, wd, prep, runs, num_steps = collected
    graphdef, state = nnx.split(prep.model)
    n = pk.GradientEngine(graphdef, state, pk.exact_grad_config(pk.GradConfig())).num_explicit
    streamed = config.copy_and_resolve_references()
    streamed.baselines.memory_budget_mb = 100 * n / 2**20  # pool 24 + test 8 examples
    calls = []
    real = pk.streamed_kernel_at
    monkeypatch.setattr(pk, "streamed_kernel_at", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(pk, "load_or_compute", lambda target, rows, compute: compute())
    feats = pk.path_kernel_features(streamed, wd, prep, runs, num_steps)
    assert calls  # the streamed route was taken
    _, saved_steps = params_reader(wd.runs, prep.model)
    steps = pk.path_steps(saved_steps(int(runs[0])), num_steps, 3)
    want = _direct_kernel(config, wd, prep, runs, steps)
    np.testing.assert_allclose(feats["train"], want / np.sqrt(np.mean(want**2)), 2e-3, 2e-4)


def test_path_kernel_is_cached_and_keyed_by_its_settings(collected, monkeypatch):
    config, wd, prep, runs, num_steps = collected
    first = pk.path_kernel_features(config, wd, prep, runs, num_steps)

    def no_gradients(*a, **k):
        raise AssertionError("the cached kernel was computed again")

    with monkeypatch.context() as m:
        m.setattr(pk, "explicit_gradients", no_gradients)
        again = pk.path_kernel_features(config, wd, prep, runs, num_steps)
        np.testing.assert_array_equal(first["train"], again["train"])
        other = config.copy_and_resolve_references()
        other.simulator.kernel_precondition = "none"
        with pytest.raises(AssertionError, match="computed again"):
            pk.path_kernel_features(other, wd, prep, runs, num_steps)
    plain = pk.path_kernel_features(other, wd, prep, runs, num_steps)
    assert not np.allclose(plain["train"], first["train"])


def test_path_kernel_over_the_memory_budget_is_an_error_naming_it(collected, monkeypatch):
    config, wd, prep, runs, num_steps = collected
    small = config.copy_and_resolve_references()
    small.baselines.memory_budget_mb = 0.01
    monkeypatch.setattr(pk, "load_or_compute", lambda target, rows, compute: compute())
    with pytest.raises(ValueError, match="baselines.memory_budget_mb"):
        pk.path_kernel_features(small, wd, prep, runs, num_steps)


def test_runs_without_saved_parameters_give_the_base_model_kernel(collected, monkeypatch):
    config, wd, prep, runs, num_steps = collected
    monkeypatch.setattr(pk, "params_reader", lambda store, model: (None, lambda run: [0]))
    feats = pk.path_kernel_features(config, wd, prep, runs, num_steps)
    want = _direct_kernel(config, wd, prep, runs, [0])
    np.testing.assert_allclose(feats["train"], want / np.sqrt(np.mean(want**2)), 2e-3, 2e-4)
