"""Collection: determinism, vmap = one by one, devices, processes, resume, store round trips."""

from __future__ import annotations

import json
import os
import re
import runpy
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import gptjax.pipeline.preparation as prepare_module
from gptjax import gptdynamics, paths, store
from gptjax.collect.curricula import draw_curriculum
from gptjax.pipeline import Workdir, collect_stage, prepare

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "tests" / "configs" / "tiny.py"

if not paths.pythia_tokenizer().is_file():
    pytest.skip(
        f"the Pythia tokenizer is not at {paths.pythia_tokenizer()} (set GPTJAX_PYTHIA_TOKENIZER)",
        allow_module_level=True,
    )


def tiny_config(**overrides):
    cfg = runpy.run_path(str(TINY))["get_config"]()
    for key, value in overrides.items():
        section, name = key.split(".")
        cfg[section][name] = value
    return cfg


def runs(workdir: Path) -> store.RunStore:
    return Workdir(workdir).runs


def collect_in_process(workdir: Path, **overrides) -> store.Dynamics:
    cfg = tiny_config(**overrides)
    wd = Workdir(workdir)
    collect_stage(cfg, wd, prepare(cfg, wd))
    return wd.runs.load(cfg.collect.num_runs)


def cli(workdir: Path, *args: str, env: dict | None = None, **popen) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "gptjax.main", f"--config={TINY}", f"--workdir={workdir}", *args]
    full_env = dict(os.environ, **(env or {}))
    return subprocess.Popen(cmd, cwd=REPO, env=full_env, **popen)


def run_bytes(workdir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((workdir / "runs").glob("run_*.npz"))}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, store.Dynamics]:
    workdir = tmp_path_factory.mktemp("reference")
    return workdir, collect_in_process(workdir)


def test_curriculum_is_a_function_of_seed_and_run():
    a = draw_curriculum(3, 5, candidates=np.arange(20), subset_size=8, batch_size=2, epochs=3)
    b = draw_curriculum(3, 5, candidates=np.arange(20), subset_size=8, batch_size=2, epochs=3)
    c = draw_curriculum(3, 6, candidates=np.arange(20), subset_size=8, batch_size=2, epochs=3)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    subset, curriculum = a
    assert curriculum.shape == (12, 2)
    for epoch in np.split(curriculum.reshape(-1), 3):  # each epoch is the subset, reshuffled
        np.testing.assert_array_equal(np.sort(epoch), subset)


def test_store_shapes_and_learning(reference):
    _, dyn = reference
    cfg = tiny_config()
    k, t, b = cfg.collect.num_runs, 8, cfg.collect.batch_size
    assert dyn.curricula.shape == (k, t, b)
    assert dyn.metrics["loss"].shape == (k, t + 1, cfg.data.test_size)
    assert dyn.valid.all()
    assert np.isfinite(dyn.metrics["loss"]).all()
    # Every run starts from the same base model, and fine-tuning lowers the test loss.
    np.testing.assert_array_equal(
        dyn.metrics["loss"][:, 0], dyn.metrics["loss"][:1, 0].repeat(k, 0)
    )
    assert (dyn.metrics["loss"][:, -1].mean(1) < dyn.metrics["loss"][:, 0].mean(1)).all()
    # lr follows the linear decay that the optimiser used, ending near 0.
    assert dyn.lr[0, 0] == pytest.approx(cfg.collect.learning_rate)
    assert np.all(np.diff(dyn.lr[0]) < 0)


def test_same_config_gives_bit_identical_store(reference, tmp_path):
    workdir, _ = reference
    collect_in_process(tmp_path)
    assert run_bytes(tmp_path) == run_bytes(workdir)


def test_vmap_over_runs_equals_runs_one_by_one(reference, tmp_path):
    _, dyn = reference
    one_by_one = collect_in_process(tmp_path, **{"collect.runs_per_device": 1})
    np.testing.assert_array_equal(one_by_one.curricula, dyn.curricula)
    np.testing.assert_allclose(one_by_one.metrics["loss"], dyn.metrics["loss"], atol=1e-5, rtol=0)


def test_eight_fake_devices_equal_one(reference, tmp_path):
    _, dyn = reference
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    proc = cli(tmp_path, "--config.collect.runs_per_device=1", env=env)
    assert proc.wait() == 0
    eight = runs(tmp_path).load()
    assert runs(tmp_path).read(0).meta["spec"]["runs_per_device"] == 1
    timing = (tmp_path / "runs" / "run_00000.timing.json").read_text()
    assert '"devices": 8' in timing
    np.testing.assert_allclose(eight.metrics["loss"], dyn.metrics["loss"], atol=1e-5, rtol=0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_distributed_collection_equals_one_process(reference, tmp_path):
    workdir, _ = reference
    port = _free_port()
    procs = [
        cli(
            tmp_path,
            "--distributed",
            f"--coordinator=127.0.0.1:{port}",
            "--num_processes=2",
            f"--process_id={i}",
            env={"JAX_PLATFORMS": "cpu"},
        )
        for i in range(2)
    ]
    assert [p.wait() for p in procs] == [0, 0]
    assert run_bytes(tmp_path) == run_bytes(workdir)
    owners = {runs(tmp_path).read(k).meta["run"] for k in range(6)}
    assert owners == set(range(6))


def test_kill_and_resume_gives_the_same_store(reference, tmp_path):
    workdir, _ = reference
    proc = cli(tmp_path, env={"JAX_PLATFORMS": "cpu"})
    # No deadline: however slow the machine, wait for the first run (pytest-timeout guards
    # against a hang).
    while not runs(tmp_path).completed() and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = runs(tmp_path).completed()
    assert partial and len(partial) < 6, "the kill should land mid-collection"
    before = {name: data for name, data in run_bytes(tmp_path).items()}
    assert cli(tmp_path, env={"JAX_PLATFORMS": "cpu"}).wait() == 0
    after = run_bytes(tmp_path)
    assert all(after[name] == data for name, data in before.items())  # nothing rewritten
    assert after == run_bytes(workdir)


def test_gptdynamics_round_trip_is_exact(reference, tmp_path):
    _, dyn = reference
    gptdynamics.export_dynamics(dyn, tmp_path / "export")
    back = gptdynamics.import_dynamics(tmp_path / "export")
    np.testing.assert_array_equal(back.curricula, dyn.curricula)
    assert back.metrics.keys() == dyn.metrics.keys()
    for name in dyn.metrics:
        np.testing.assert_array_equal(back.metrics[name], dyn.metrics[name])
    first = (tmp_path / "export" / "run_0" / "train_samples_id.json").read_text().splitlines()[0]
    assert first.startswith('{"step": 1, "samples_id": [')


def test_gptdynamics_import_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_samples_id.json"):
        gptdynamics.import_run(tmp_path)
    (tmp_path / "train_samples_id.json").write_text('{"step": 1, "samples_id": [0]}\nnot json\n')
    with pytest.raises(ValueError, match="line 2"):
        gptdynamics.import_run(tmp_path)


def test_diverging_run_is_stopped_and_marked(tmp_path, monkeypatch):
    """A NaN in one pool example's data makes exactly the runs that train on it diverge."""
    from gptjax.tasks import tokenize as tok_mod

    original = tok_mod.tokenize_examples

    def poisoned(examples, tokenizer, **kw):
        out = original(examples, tokenizer, **kw)
        if len(examples) == 28:  # the pool (24 + 4 unseen), not the test set
            out.target_mask = out.target_mask.copy()
            out.target_mask[3] = np.nan
        return out

    monkeypatch.setattr(prepare_module, "tokenize_examples", poisoned)
    dyn = collect_in_process(tmp_path)
    uses_3 = np.array([3 in c for c in dyn.curricula])
    assert uses_3.any() and not uses_3.all()
    np.testing.assert_array_equal(dyn.valid, ~uses_3)
    for k in np.flatnonzero(uses_3):
        meta = runs(tmp_path).read(k).meta
        first = int(np.argmax((dyn.curricula[k] == 3).any(1))) + 1
        assert meta["status"] == "diverged" and meta["failed_step"] == first
        assert np.isnan(dyn.metrics["loss"][k, first:]).all()
        assert np.isfinite(dyn.metrics["loss"][k, :first]).all()
    assert np.isfinite(dyn.metrics["loss"][~uses_3]).all()


def test_invalid_config_is_rejected_before_any_work(tmp_path):
    proc = cli(
        tmp_path / "wd",
        "--config.collect.batch_size=0",
        stderr=subprocess.PIPE,
        text=True,
    )
    _, err = proc.communicate()
    assert proc.returncode != 0
    assert "collect.batch_size" in err
    assert not (tmp_path / "wd").exists()


def test_unknown_key_is_named(tmp_path):
    cfg = tiny_config()
    cfg.collect.learning_rat = 0.1
    with pytest.raises(ValueError, match="collect.learning_rat"):
        prepare(cfg, Workdir(tmp_path))


def test_workdir_refuses_a_different_config(reference, tmp_path):
    collect_in_process(tmp_path)
    with pytest.raises(ValueError, match="collect.learning_rate"):
        prepare(tiny_config(**{"collect.learning_rate": 0.5}), Workdir(tmp_path))


@pytest.mark.parametrize(
    ("key", "other"), [("eval_buckets", 0), ("save_params_runs", "test")], ids=lambda v: str(v)
)
def test_a_workdir_from_before_a_new_key_resumes_at_its_default(reference, tmp_path, key, other):
    collect_in_process(tmp_path)
    config_file = Workdir(tmp_path).config_file
    saved = json.loads(config_file.read_text())
    del saved["collect"][key]  # as written by a version without the key
    config_file.write_text(json.dumps(saved))
    files = sorted((tmp_path / "runs").glob("run_*.npz"))
    written = [f.stat().st_mtime_ns for f in files]
    collect_in_process(tmp_path)  # the default: accepted, and no run collected again
    assert [f.stat().st_mtime_ns for f in files] == written
    with pytest.raises(ValueError, match=f"collect.{key}"):
        prepare(tiny_config(**{f"collect.{key}": other}), Workdir(tmp_path))


def test_save_params_runs_test_saves_the_test_runs_and_what_comes_after_them(tmp_path):
    """collect.save_params_runs = "test": runs from the first test run of collect.split on
    save (the split's test runs, and any after them that a diverged run would shift them to);
    the earlier ones write nothing. A value other than all | test, or the path kernel, which
    reads the training runs' saves, is refused by validation."""
    from gptjax.pipeline import config as config_lib

    cfg = tiny_config(**{"collect.save_params_runs": "test", "collect.split": "2,1,2"})
    assert config_lib.collect_spec(cfg).save_from_run == 3
    collect_in_process(tmp_path, **{"collect.save_params_runs": "test", "collect.split": "2,1,2"})
    for run in range(cfg.collect.num_runs):
        assert runs(tmp_path).checkpoint_dir(run).is_dir() == (run >= 3), run
    assert config_lib.collect_spec(tiny_config()).save_from_run == 0
    with pytest.raises(
        ValueError, match=re.escape("'collect.save_params_runs' must be all | test")
    ):
        config_lib.validate(tiny_config(**{"collect.save_params_runs": "train"}))
    cfg.simulator.models = "gptfluence,gradient_kernel"
    cfg.simulator.kernel_checkpoints, cfg.simulator.kernel_precondition = 1, "none"
    config_lib.validate(cfg)  # the base model's kernel needs no saves
    cfg.simulator.kernel_checkpoints, cfg.simulator.kernel_precondition = 4, "adam"
    with pytest.raises(ValueError, match=re.escape("kernel_checkpoints' (4): the path kernel")):
        config_lib.validate(cfg)


def test_runs_fingerprinted_by_the_version_before_the_added_later_rule_resume(reference, tmp_path):
    """A version had collect.eval_buckets but fingerprinted runs with it included at its
    default (workdirs of a day's experiments): their runs are this collection's and are read
    and resumed as they are, not collected again."""
    collect_in_process(tmp_path)
    prep = prepare(tiny_config(), Workdir(tmp_path))
    assert len(prep.older_fingerprints) == 1 and prep.older_fingerprints[0] != prep.fingerprint
    store_ = runs(tmp_path)
    for k in range(tiny_config().collect.num_runs):
        record = store_.read(k)
        record.meta["config_fingerprint"] = prep.older_fingerprints[0]
        store_.write(k, record)
    files = sorted((tmp_path / "runs").glob("run_*.npz"))
    written = [f.stat().st_mtime_ns for f in files]
    dyn = collect_in_process(tmp_path)
    assert [f.stat().st_mtime_ns for f in files] == written  # nothing collected again
    assert dyn.curricula.shape[0] == tiny_config().collect.num_runs
    assert store_.read(0, prep.run_expect).meta["run"] == 0
    with pytest.raises(ValueError, match="another config"):
        store_.read(0, {"config_fingerprint": (prep.fingerprint,)})


GENERATION = {
    "data.task": "demo_gen",
    "collect.generation_every": 4,
    "collect.max_new_tokens": 8,
    "collect.num_runs": 2,
    "collect.split": "1,0,1",
    "collect.save_params": "none",
}


def test_generation_metrics_every_m_steps(tmp_path, monkeypatch):
    dyn = collect_in_process(tmp_path / "whole", **GENERATION)
    # Decoding 3 test examples at a time (sampled, so the rows' keys matter) gives every
    # number of decoding them at once.
    from gptjax.collect import generation_eval

    decoded = []  # the number of prompts of each decoding call

    def counted(graphdef, trained, frozen, prompts, *args, **kwargs):
        decoded.append(len(prompts))
        return generate_runs(graphdef, trained, frozen, prompts, *args, **kwargs)

    generate_runs = generation_eval.generate_runs
    monkeypatch.setattr(generation_eval, "generate_runs", counted)
    sampled = GENERATION | {"collect.sampling_temperature": 0.8}
    once = collect_in_process(tmp_path / "once", **sampled)
    test_size = tiny_config(**GENERATION).data.test_size
    assert set(decoded) == {test_size} and test_size > 3  # one call per evaluation
    evaluations = len(decoded)
    decoded.clear()
    chunked = collect_in_process(tmp_path / "chunks", **sampled, **{"collect.generation_chunk": 3})
    assert max(decoded) == 3 and sum(decoded) == evaluations * test_size  # in chunks of 3
    for name in ("bleu", "rougeL"):
        np.testing.assert_array_equal(chunked.metrics[name], once.metrics[name])
    assert set(dyn.metrics) == {"loss", "bleu", "rougeL"}
    observed = [0, 4, 8]
    for name in ("bleu", "rougeL"):
        y = dyn.metrics[name]
        assert np.isfinite(y[:, observed]).all()
        assert np.isnan(np.delete(y, observed, axis=1)).all()  # unobserved steps are NaN
    assert 0.0 <= np.nanmin(dyn.metrics["bleu"]) and np.nanmax(dyn.metrics["bleu"]) <= 100.0
    assert 0.0 <= np.nanmin(dyn.metrics["rougeL"]) and np.nanmax(dyn.metrics["rougeL"]) <= 1.0
