"""Collection options that do less work: partial fine-tuning over a cached frozen prefix,
evaluation every m steps, bf16 compute, and TracIn inner products recorded during collection.
Each is checked against a plain computation that does the full work."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from baselines import GradConfig, GradientEngine, checkpoint_schedule, simulate_from_dots
from baselines.grads import as_batch
from baselines.tracin import engine_scorer, simulate_run
from gptjax.collect.curricula import draw_curriculum
from gptjax.collect.runner import CollectSpec, collect, split_trained, step_blocks
from gptjax.collect.train_step import example_losses, make_optimizer, make_schedule
from gptjax.models.config import pythia_style
from gptjax.models.transformer import init_model
from gptjax.store import RunStore

POOL, TEST, LEN, TARGET, VOCAB = 24, 6, 12, 3, 61


def tokens(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    lengths = rng.integers(TARGET + 2, LEN + 1, size=n)
    ids = rng.integers(1, VOCAB, size=(n, LEN)).astype(np.int32)
    mask = (np.arange(LEN)[None] < lengths[:, None]).astype(np.int32)
    ids = ids * mask
    pos = (lengths[:, None] - TARGET - 1 + np.arange(TARGET)[None]).astype(np.int32)
    target_ids = np.take_along_axis(ids, pos + 1, axis=1)
    target_mask = np.ones((n, TARGET), np.float32)
    target_mask[::3, -1] = 0.0  # some examples with a shorter target
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "target_pos": pos,
        "target_ids": target_ids,
        "target_mask": target_mask,
    }


@pytest.fixture(scope="module")
def setup():
    cfg = dataclasses.replace(
        pythia_style(),
        vocab_size=VOCAB,
        hidden_size=32,
        num_layers=3,
        num_heads=4,
        intermediate_size=64,
    )
    rng = np.random.default_rng(0)
    return init_model(cfg, seed=1), tokens(rng, POOL), tokens(rng, TEST)


def spec(**overrides) -> CollectSpec:
    base = dict(
        seed=3,
        num_runs=3,
        subset_size=8,
        batch_size=2,
        epochs=2,
        learning_rate=3e-3,
        runs_per_device=2,
        eval_chunk=4,
    )
    return CollectSpec(**(base | overrides))


def collected(tmp_path, model, pool, test, name, **overrides):
    s = spec(**overrides)
    store = RunStore(tmp_path / name)
    collect(store, s, model, pool, test, pool_size=POOL, progress=False)
    return s, store.load(s.num_runs)


def reference_run(model, pool, test, s: CollectSpec, run: int, trained_from: int) -> np.ndarray:
    """One run, one step at a time, on the whole model from input ids: the gradient of every
    parameter below block ``trained_from`` (and the embedding) is masked out of AdamW."""
    graphdef, params = nnx.split(model)
    schedule = make_schedule(s.learning_rate, s.num_steps, s.warmup_steps, s.end_lr_factor)
    adamw = make_optimizer(schedule, b1=s.b1, b2=s.b2, eps=s.eps, weight_decay=s.weight_decay)

    def trained(path) -> bool:
        if not trained_from:
            return True
        return path[0] == "final_norm" or (path[0] == "layers" and int(path[1]) >= trained_from)

    mask = nnx.State.from_flat_path(
        {path: trained(path) for path, _ in nnx.to_flat_state(params)}
    ).to_pure_dict()
    optimizer = optax.masked(adamw, mask)
    params = params.to_pure_dict()
    state = optimizer.init(params)
    pool_j = {k: jnp.asarray(v) for k, v in pool.items()}
    test_j = {k: jnp.asarray(v) for k, v in test.items()}

    def losses(p, batch):
        return example_losses(graphdef, nnx.State(p), batch)

    _, curriculum = draw_curriculum(
        s.seed,
        run,
        candidates=np.arange(POOL),
        subset_size=s.subset_size,
        batch_size=s.batch_size,
        epochs=s.epochs,
    )
    y = [np.asarray(losses(params, test_j))]
    for ids in curriculum:
        batch = jax.tree.map(lambda a, ids=ids: a[ids], pool_j)
        grads = jax.grad(lambda p, batch=batch: losses(p, batch).mean())(params)
        grads = jax.tree.map(
            lambda g, m: g if m else jnp.zeros_like(g), grads, mask
        )  # frozen: no gradient reaches AdamW (masked: no weight decay either)
        updates, state = optimizer.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        y.append(np.asarray(losses(params, test_j)))
    return np.stack(y)


def test_full_fine_tuning_matches_the_step_by_step_reference(tmp_path, setup):
    model, pool, test = setup
    s, dyn = collected(tmp_path, model, pool, test, "full")
    for run in range(s.num_runs):
        want = reference_run(model, pool, test, s, run, trained_from=0)
        np.testing.assert_allclose(dyn.metrics["loss"][run], want, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("train_layers", [1, 2])
def test_partial_fine_tuning_over_the_cached_prefix_is_exact(tmp_path, setup, train_layers):
    model, pool, test = setup
    s, dyn = collected(tmp_path, model, pool, test, "partial", train_layers=train_layers)
    first = model.config.num_layers - train_layers
    for run in range(s.num_runs):
        want = reference_run(model, pool, test, s, run, trained_from=first)
        np.testing.assert_allclose(dyn.metrics["loss"][run], want, rtol=2e-5, atol=2e-5)
    _, full = collected(tmp_path, model, pool, test, "full")
    assert not np.allclose(dyn.metrics["loss"], full.metrics["loss"], atol=1e-4)


def test_split_trained_refuses_every_layer(setup):
    model, _, _ = setup
    with pytest.raises(ValueError, match="train_layers"):
        split_trained(model, model.config.num_layers)
    _, params, frozen, first = split_trained(model, 1)
    names = {path[:2] for path, _ in nnx.to_flat_state(params)}
    assert names == {("final_norm", "bias"), ("final_norm", "scale"), ("layers", 2)}
    assert first == 2 and ("embed", "embedding") in {p for p, _ in nnx.to_flat_state(frozen)}


def test_evaluating_every_m_steps_keeps_those_steps_and_nothing_else(tmp_path, setup):
    model, pool, test = setup
    s1, every1 = collected(tmp_path, model, pool, test, "m1")
    s3, every3 = collected(tmp_path, model, pool, test, "m3", eval_every=3)
    steps = s1.num_steps
    observed = sorted({0, steps} | set(range(3, steps + 1, 3)))
    y1, y3 = every1.metrics["loss"], every3.metrics["loss"]
    np.testing.assert_allclose(y3[:, observed], y1[:, observed], rtol=1e-5, atol=1e-6)
    others = [t for t in range(steps + 1) if t not in observed]
    assert others and np.isnan(y3[:, others]).all()
    np.testing.assert_allclose(every3.train_loss, every1.train_loss, rtol=1e-5, atol=1e-6)


def test_step_blocks_end_at_evaluations_saves_and_extra_evaluations():
    s = spec(eval_every=4, save_steps=(0, 2, 8))  # T = 8
    assert step_blocks(s, 0) == [(1, 2, False), (3, 4, True), (5, 8, True)]
    assert step_blocks(s, 3) == [(1, 2, False), (3, 3, False), (4, 4, True), (5, 6, False),
                                 (7, 8, True)]  # fmt: skip


def test_tracin_dots_give_the_checkpoint_tracin_trajectories(tmp_path, setup):
    model, pool, test = setup
    steps = spec().num_steps
    s, dyn = collected(
        tmp_path, model, pool, test, "dots", tracin_dots=True, save_steps=tuple(range(steps + 1))
    )
    assert dyn.tracin_dots.shape == (s.num_runs, steps, TEST)
    graphdef, like = nnx.split(model)
    engine = GradientEngine(graphdef, like, GradConfig(factorize="none"))
    store = RunStore(tmp_path / "dots")
    import orbax.checkpoint as ocp

    def params_at(run, step):
        with ocp.CheckpointManager(store.checkpoint_dir(run).resolve()) as manager:
            return manager.restore(step, args=ocp.args.StandardRestore(like))

    y = dyn.metrics["loss"]
    for run in range(s.num_runs):
        scorer = engine_scorer(
            engine, lambda step, run=run: params_at(run, step), as_batch(pool), as_batch(test)
        )
        schedule = checkpoint_schedule(range(steps + 1), steps, "all")
        want = simulate_run(scorer, schedule, dyn.curricula[run], dyn.lr[run], y[run, :1])
        got = simulate_from_dots(dyn.tracin_dots[run], dyn.lr[run], y[run, :1])
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
        assert np.abs(got[1:] - got[0]).max() > 1e-3  # the dots move the trajectory


def test_tracin_dots_with_partial_fine_tuning_are_the_trained_parameters_gradients(tmp_path, setup):
    model, pool, test = setup
    s, dyn = collected(tmp_path, model, pool, test, "pdots", train_layers=1, tracin_dots=True)
    first = model.config.num_layers - 1
    graphdef, params = nnx.split(model)
    batch0 = jax.tree.map(lambda a: jnp.asarray(a[dyn.curricula[0, 0]]), pool)

    def trained_grads(batch_or_test, reduce):
        def loss(p):
            return reduce(example_losses(graphdef, p, batch_or_test))

        g = nnx.to_flat_state(jax.grad(loss)(params))
        return {p: v for p, v in g if p[0] == "final_norm" or (p[0] == "layers" and p[1] >= first)}

    gb = trained_grads(batch0, jnp.mean)
    for n in range(TEST):
        one = jax.tree.map(lambda a, n=n: jnp.asarray(a[n : n + 1]), test)
        gn = trained_grads(one, jnp.sum)
        dot = sum(float(jnp.vdot(gb[p], gn[p])) for p in gb)
        np.testing.assert_allclose(dyn.tracin_dots[0, 0, n], dot, rtol=1e-4, atol=1e-7)


def test_bf16_compute_stays_close_to_float32(tmp_path, setup):
    model, pool, test = setup
    _, f32 = collected(tmp_path, model, pool, test, "f32")
    _, b16 = collected(tmp_path, model, pool, test, "b16", compute_dtype="bfloat16")
    y32, y16 = f32.metrics["loss"], b16.metrics["loss"]
    assert np.isfinite(y16).all()
    gap = np.abs(y16 - y32).max()
    assert 0 < gap < 0.05 * np.abs(y32).max()  # bf16 really ran, and stayed close


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train_layers": -1}, "train_layers"),
        ({"eval_every": 0}, "eval_every"),
        ({"compute_dtype": "float16"}, "compute_dtype"),
    ],
)
def test_collect_spec_refuses_bad_options(overrides, message):
    with pytest.raises(ValueError, match=message):
        spec(**overrides)


def test_pipeline_with_partial_fine_tuning_sparse_evaluation_and_recorded_tracin(tmp_path):
    """Every stage on runs that trained the top block only, measured every 2 steps, with
    TracIn-CP from the inner products recorded during collection (no checkpoint)."""
    import runpy
    from pathlib import Path

    from gptjax import paths
    from gptjax.io import read_json
    from gptjax.pipeline import Workdir, run_pipeline

    if not paths.pythia_tokenizer().is_file():
        pytest.skip("the Pythia tokenizer is not available")
    tiny = Path(__file__).resolve().parent / "configs" / "tiny.py"
    cfg = runpy.run_path(str(tiny))["get_config"]()
    cfg.stages = "collect,simulate,baselines,report"
    cfg.model.num_layers = 2
    cfg.collect.train_layers = 1
    cfg.collect.eval_every = 2
    cfg.collect.tracin_dots = True
    cfg.collect.save_params = "none"
    cfg.simulator.models = "gptfluence"
    cfg.simulator.gptfluence.epochs = 2
    cfg.baselines.methods = "persistence,mean_trajectory,tracin_cp_all"
    wd = Workdir(tmp_path / "wd")
    run_pipeline(cfg, str(wd.root))
    dyn = wd.runs.load(cfg.collect.num_runs)
    steps = dyn.metrics["loss"].shape[1] - 1
    assert np.isnan(dyn.metrics["loss"][:, 1::2][:, : steps // 2]).all()
    assert np.isfinite(dyn.metrics["loss"][:, ::2]).all()
    assert dyn.tracin_dots.shape == (cfg.collect.num_runs, steps, cfg.data.test_size)
    assert not any(wd.runs.checkpoint_dir(r).exists() for r in range(cfg.collect.num_runs))
    baselines = read_json(wd.result("baselines.json"))
    assert np.isfinite(baselines["results"]["loss"]["tracin_cp_all"]["mse_mean"])
    report = wd.report_file.read_text()
    assert "partial fine-tuning (top 1 block and the final norm), test losses every 2" in report
    simulators = read_json(wd.result("simulators.json"))
    assert np.isfinite(simulators["results"]["loss"]["gptfluence"]["mse_mean"])


def test_pipeline_with_partial_fine_tuning_and_saved_trained_blocks(tmp_path):
    """Every gradient method and the gradient-kernel simulators on runs that trained the top
    block only and saved it at every step."""
    import runpy
    from pathlib import Path

    from gptjax import paths
    from gptjax.io import read_json
    from gptjax.pipeline import Workdir, run_pipeline

    if not paths.pythia_tokenizer().is_file():
        pytest.skip("the Pythia tokenizer is not available")
    tiny = Path(__file__).resolve().parent / "configs" / "tiny.py"
    cfg = runpy.run_path(str(tiny))["get_config"]()
    cfg.stages = "collect,simulate,baselines"
    cfg.model.num_layers = 2
    cfg.collect.train_layers = 1
    cfg.collect.tracin_dots = True
    cfg.collect.save_params = "all"
    cfg.simulator.models = "gptfluence_kernel,gradient_kernel"
    cfg.simulator.kernel_checkpoints = 2
    cfg.simulator.gptfluence.epochs = 2
    cfg.baselines.methods = "persistence,tracin_cp_all,tracin_cp_k,grad_dot"
    wd = Workdir(tmp_path / "wd")
    run_pipeline(cfg, str(wd.root))
    rows = read_json(wd.result("baselines.json"))["results"]["loss"]
    for method in ("tracin_cp_all", "tracin_cp_k", "grad_dot"):
        assert np.isfinite(rows[method]["mse_mean"]), method
    assert rows["grad_dot"]["mse_mean"] != rows["tracin_cp_all"]["mse_mean"]
    simulators = read_json(wd.result("simulators.json"))["results"]["loss"]
    for name in ("gptfluence_kernel", "gradient_kernel"):
        assert np.isfinite(simulators[name]["mse_mean"]), name


def test_config_refuses_gradient_methods_that_need_checkpoints_with_partial_fine_tuning():
    import runpy
    from pathlib import Path

    from gptjax.pipeline.config import validate

    tiny = Path(__file__).resolve().parent / "configs" / "tiny.py"
    cfg = runpy.run_path(str(tiny))["get_config"]()
    cfg.collect.train_layers = 1
    cfg.collect.save_params = "none"
    cfg.baselines.methods = "persistence,grad_dot"
    with pytest.raises(ValueError, match="grad_dot need the trained blocks' saved parameters"):
        validate(cfg)
    cfg.baselines.methods = "persistence,tracin_cp_all"
    with pytest.raises(ValueError, match="tracin_cp_all need the trained blocks' saved"):
        validate(cfg)  # neither recorded inner products nor checkpoints
    cfg.collect.save_params = "all"
    cfg.baselines.methods = "persistence,grad_dot_last_layer"
    with pytest.raises(ValueError, match="grad_dot_last_layer differentiate the unembedding"):
        validate(cfg)
    cfg.baselines.methods = "persistence,tracin_cp_all,tracin_cp_k,grad_dot"
    validate(cfg)
    cfg.collect.save_params = "none"
    cfg.collect.tracin_dots = True
    cfg.baselines.methods = "persistence,tracin_cp_all"
    validate(cfg)


def trained_part(state, first: int) -> dict:
    return {p: v for p, v in nnx.to_flat_state(state) if p[0] == "final_norm" or (
        p[0] == "layers" and p[1] >= first)}  # fmt: skip


def test_partial_fine_tuning_saves_the_trained_blocks_and_reads_back_the_whole_model(
    tmp_path, setup
):
    """Checkpoints of a partial run hold its trained blocks only; read back, they complete
    to the model whose test losses collection recorded at that step."""
    from gptjax.collect.checkpoints import params_reader

    model, pool, test = setup
    s, dyn = collected(tmp_path, model, pool, test, "psave", train_layers=1, save_steps=(2, 5, 8))
    first = model.config.num_layers - 1
    store = RunStore(tmp_path / "psave")
    params_at, saved_steps = params_reader(store, model)
    graphdef, base = nnx.split(model)
    base_flat = dict(nnx.to_flat_state(base))
    test_j = {k: jnp.asarray(v) for k, v in test.items()}
    for run in range(s.num_runs):
        assert saved_steps(run) == [0, 2, 5, 8]
        for step in (2, 8):
            state = params_at(run, step)
            flat = dict(nnx.to_flat_state(state))
            assert flat.keys() == base_flat.keys()
            moved = trained_part(state, first)
            for path, value in flat.items():  # the frozen part is the base model's
                if path not in moved:
                    np.testing.assert_array_equal(np.asarray(value), np.asarray(base_flat[path]))
            assert any(
                not np.allclose(np.asarray(v), np.asarray(base_flat[p])) for p, v in moved.items()
            )
            got = np.asarray(example_losses(graphdef, state, test_j))
            np.testing.assert_allclose(got, dyn.metrics["loss"][run, step], rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("factorize", ["none", "all"])
def test_engine_gives_the_trained_parameters_gradient_inner_products(setup, factorize):
    """A partial fine-tuning's gradient inner products against autodiff of the whole model's
    loss, restricted to the trained parameters."""
    model, pool, test = setup
    first = model.config.num_layers - 1
    graphdef, params = nnx.split(model)
    engine = GradientEngine(graphdef, params, GradConfig(factorize=factorize), first_layer=first)
    assert engine.num_explicit <= sum(v.size for v in trained_part(params, first).values())

    def grads(batch, n):
        one = jax.tree.map(lambda a: jnp.asarray(a[n : n + 1]), batch)
        g = jax.grad(lambda p: example_losses(graphdef, p, one).sum())(params)
        return trained_part(g, first)

    train_ids = [0, 3, 7, 11]
    got = engine.scores(params, {k: v[train_ids] for k, v in pool.items()}, test)
    want = np.zeros((len(train_ids), TEST))
    gt = [grads(test, n) for n in range(TEST)]
    for i, m in enumerate(train_ids):
        gm = grads(pool, m)
        for n in range(TEST):
            want[i, n] = sum(float(jnp.vdot(gm[p], gt[n][p])) for p in gm)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
    self_want = [sum(float(jnp.vdot(g[p], g[p])) for p in g) for g in gt]
    np.testing.assert_allclose(engine.self_scores(params, test), self_want, rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="unembedding"):
        GradientEngine(graphdef, params, GradConfig(layers="last"), first_layer=first)


def test_checkpoint_tracin_of_a_partial_run_matches_its_recorded_inner_products(tmp_path, setup):
    """TracIn-CP at every step from the saved trained blocks (engine, residuals of the frozen
    blocks) equals the one from the inner products recorded during collection."""
    from baselines import predict_gradient_methods
    from gptjax.collect.checkpoints import params_reader

    model, pool, test = setup
    steps = spec().num_steps
    s, dyn = collected(
        tmp_path,
        model,
        pool,
        test,
        "pdots_saved",
        train_layers=1,
        tracin_dots=True,
        save_steps=tuple(range(1, steps + 1)),
    )
    params_at, saved_steps = params_reader(RunStore(tmp_path / "pdots_saved"), model)
    y = dyn.metrics["loss"]
    runs = list(range(s.num_runs))
    got = predict_gradient_methods(
        ["tracin_cp_all"],
        runs,
        curricula=dyn.curricula,
        lr=dyn.lr,
        y=y,
        graphdef=nnx.split(model)[0],
        params_at=params_at,
        saved_steps=saved_steps,
        train_tokens=pool,
        test_tokens=test,
        grad_config=GradConfig(factorize="none"),
        first_layer=model.config.num_layers - 1,
    )["tracin_cp_all"][0]
    want = np.stack([simulate_from_dots(dyn.tracin_dots[r], dyn.lr[r], y[r, :1]) for r in runs])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert np.abs(got[:, 1:] - got[:, :1]).max() > 1e-3  # the trained blocks moved


def test_frozen_blocks_output_is_attached_once_for_every_checkpoint(setup, monkeypatch):
    """A partial model's engine enters the trained blocks from the frozen blocks' output:
    attached beforehand or computed in the call, the scores are the same; TracIn-CP over
    several checkpoints runs the frozen blocks once per batch, not once per checkpoint; a
    fully trained model's batches are left as they are."""
    import baselines.grads as grads_module
    from baselines.tracin import tracin_scores
    from gptjax.collect.train_step import RESIDUAL

    model, pool, test = setup
    first = model.config.num_layers - 1
    graphdef, params = nnx.split(model)
    engine = GradientEngine(graphdef, params, GradConfig(factorize="none"), first_layer=first)
    attached = engine.attach_residuals(params, pool)
    want = np.asarray(
        model.residual_after(
            jnp.asarray(pool["input_ids"]), jnp.asarray(pool["attention_mask"]), first
        )
    )
    np.testing.assert_allclose(attached[RESIDUAL], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        engine.scores(params, attached, engine.attach_residuals(params, test)),
        engine.scores(params, pool, test),
        rtol=1e-6,
        atol=1e-9,
    )
    full = GradientEngine(graphdef, params, GradConfig(factorize="none"))
    assert RESIDUAL not in full.attach_residuals(params, pool)

    calls = []
    real = grads_module.cached_residuals
    monkeypatch.setattr(
        grads_module, "cached_residuals", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    tracin_scores(engine, [params, params, params], [0.1, 0.2, 0.3], pool, test)
    assert len(calls) == 2  # the pool and the test examples, each once


def test_frozen_blocks_output_pads_its_last_chunk_to_one_compilation(setup):
    """A count that is not a multiple of the chunk: the last chunk is padded to the chunk's
    shape, so it reuses the compilation of the full chunks (one new cache entry, not two),
    and the padding rows never reach the output."""
    from gptjax.collect.runner import _frozen_prefix, cached_residuals
    from gptjax.collect.train_step import RESIDUAL

    model, pool, _ = setup
    first = model.config.num_layers - 1
    count = len(pool["input_ids"]) - 1
    part = {k: np.asarray(v)[:count] for k, v in pool.items()}
    chunk = 3 if count % 3 else 4
    assert count % chunk and count > chunk
    _frozen_prefix.clear_cache()  # other tests' shapes must not count here
    got = cached_residuals(model, part, first, chunk)
    assert _frozen_prefix._cache_size() == 1
    want = model.residual_after(
        jnp.asarray(part["input_ids"]), jnp.asarray(part["attention_mask"]), first
    )
    assert got[RESIDUAL].shape == want.shape
    np.testing.assert_allclose(got[RESIDUAL], want, rtol=1e-5, atol=1e-6)
    assert set(got) == (set(part) - {"input_ids"}) | {RESIDUAL}


def test_runs_before_save_from_run_save_nothing_and_the_rest_save_the_same(tmp_path, setup):
    """``save_from_run``: the earlier runs write no checkpoint (and say so in their meta), the
    later ones the same checkpoints as when every run saves; the trajectories are unchanged,
    and reading a step an earlier run did not save is an error that names the setting."""
    from gptjax.collect.checkpoints import params_reader

    model, pool, test = setup
    steps = (0, 4, 8)  # T = 8
    s, dyn = collected(tmp_path, model, pool, test, "late", save_steps=steps, save_from_run=2)
    _, every = collected(tmp_path, model, pool, test, "every", save_steps=steps)
    np.testing.assert_array_equal(dyn.metrics["loss"], every.metrics["loss"])
    store, every_store = RunStore(tmp_path / "late"), RunStore(tmp_path / "every")
    params_at, saved_steps = params_reader(store, model)
    every_at, _ = params_reader(every_store, model)
    for run in range(s.num_runs):
        saves = run >= 2
        meta = store.read(run).meta
        assert meta["saved_steps"] == (list(steps) if saves else []), run
        assert (meta["bytes_per_checkpoint"] > 0) == saves, run
        assert store.checkpoint_dir(run).is_dir() == saves, run
        assert saved_steps(run) == (list(steps) if saves else [0]), run
    for a, b in zip(jax.tree.leaves(params_at(2, 8)), jax.tree.leaves(every_at(2, 8)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(FileNotFoundError, match="save_params_runs"):
        params_at(0, 4)
    with pytest.raises(ValueError, match="save_from_run must be >= 0"):
        spec(save_from_run=-1)


def test_a_collection_whose_checkpoints_do_not_fit_on_the_disk_is_refused_before_any_step(
    tmp_path, setup, monkeypatch
):
    """Checkpoints larger than the disk's free space: one error naming the sizes and the
    settings that shrink them, raised before any run is written; runs that save nothing
    need no space."""
    import shutil

    from gptjax.collect.runner import checkpoint_bytes

    model, pool, test = setup
    s = spec(save_steps=(0, 4, 8), save_params_regex="lm_head")
    per = checkpoint_bytes(nnx.split(model)[1], s)
    assert per == 32 * VOCAB * 4  # the unembedding's float32 matrix
    need = s.num_runs * 3 * per
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=need - 1))
    store = RunStore(tmp_path / "full")
    with pytest.raises(ValueError, match=r"would take .* GB \(3 runs x 3 steps x .* MB\)") as err:
        collect(store, s, model, pool, test, pool_size=POOL, progress=False)
    assert "save_params_runs = 'test'" in str(err.value)
    assert store.completed() == set()
    # The last run alone fits.
    late = dataclasses.replace(s, save_from_run=2)
    collect(store, late, model, pool, test, pool_size=POOL, progress=False)
    assert store.completed() == {0, 1, 2}
