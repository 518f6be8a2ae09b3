"""A workdir never gives a wrong answer: damaged, foreign or stray run files are detected and
collected again; data that differs from what the runs were collected on is refused; a
garbled JSON file is named."""

from __future__ import annotations

import json
import runpy
import shutil
from pathlib import Path

import pytest

from gptjax import paths
from gptjax.pipeline import Workdir, collect_stage, prepare

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "tests" / "configs" / "tiny.py"

if not paths.pythia_tokenizer().is_file():
    pytest.skip("the Pythia tokenizer is not installed", allow_module_level=True)


def collect(workdir: Path) -> Workdir:
    cfg = runpy.run_path(str(TINY))["get_config"]()
    wd = Workdir(workdir)
    collect_stage(cfg, wd, prepare(cfg, wd))
    return wd


def run_bytes(workdir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((workdir / "runs").glob("run_*.npz"))}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("reference")
    collect(workdir)
    return workdir


@pytest.fixture
def copy(reference, tmp_path) -> Path:
    shutil.copytree(reference, tmp_path / "wd")
    return tmp_path / "wd"


@pytest.mark.parametrize("damage", ["truncate", "other_run", "other_config", "garble"])
def test_damaged_or_foreign_run_file_is_collected_again(reference, copy, damage, capsys):
    target = copy / "runs" / "run_00003.npz"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:200])
    elif damage == "other_run":
        shutil.copy(copy / "runs" / "run_00001.npz", target)
    elif damage == "other_config":  # as if copied from a workdir of another config
        runs = Workdir(copy).runs
        record = runs.read(3)
        record.meta["config_fingerprint"] = "0123456789abcdef"
        runs.write(3, record)
    else:
        data = bytearray(target.read_bytes())
        data[len(data) // 2 : len(data) // 2 + 64] = b"\x00" * 64
        target.write_bytes(bytes(data))
    expect = {"config_fingerprint": Workdir(reference).runs.read(3).meta["config_fingerprint"]}
    with pytest.raises(ValueError, match="run_00003.npz"):
        Workdir(copy).runs.read(3, expect)  # named, never silently used
    untouched = (copy / "runs" / "run_00002.npz").stat().st_mtime_ns
    collect(copy)
    said = capsys.readouterr()
    assert "run 3:" in said.out + said.err and "collecting it again" in said.out + said.err
    assert run_bytes(copy) == run_bytes(reference)
    assert (copy / "runs" / "run_00002.npz").stat().st_mtime_ns == untouched


def test_run_of_another_config_is_refused_by_the_reader(copy):
    runs = Workdir(copy).runs
    expect = {"config_fingerprint": runs.read(0).meta["config_fingerprint"]}
    with pytest.raises(ValueError, match="another config"):
        runs.read(0, {"config_fingerprint": "0" * 16})
    assert runs.read(0, expect).meta["run"] == 0


def test_stray_run_files_are_ignored(reference, copy):
    shutil.copy(copy / "runs" / "run_00003.npz", copy / "runs" / "run_00003_backup.npz")
    (copy / "runs" / "run_extra.npz").write_bytes(b"junk")
    (copy / "runs" / "run_00003.npz").unlink()
    assert Workdir(copy).runs.completed() == {0, 1, 2, 4, 5}
    collect(copy)
    assert run_bytes(copy) == run_bytes(reference) | {
        "run_00003_backup.npz": run_bytes(reference)["run_00003.npz"],
        "run_extra.npz": b"junk",
    }


def test_other_data_is_refused_and_nothing_overwritten(copy):
    pools_file = copy / "data" / "pools.json"
    pools = json.loads(pools_file.read_text())
    pools["train"][0]["label"] = 1 - (pools["train"][0]["label"] or 0)  # as if relabelled
    pools_file.write_text(json.dumps(pools))
    before = pools_file.read_bytes()
    recorded = json.loads((copy / "config.json").read_text())["resolved"]
    assert recorded["data_root"] and len(recorded["data_fingerprint"]) == 16
    with pytest.raises(ValueError, match=f"data differs.*data root then {recorded['data_root']}"):
        collect(copy)
    assert pools_file.read_bytes() == before


def test_garbled_json_is_named(copy):
    (copy / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json: not a readable JSON file"):
        collect(copy)
    (copy / "config.json").unlink()
    (copy / "model" / "config.json").write_text("")
    with pytest.raises(ValueError, match="model/config.json: not a readable JSON file"):
        collect(copy)


@pytest.mark.parametrize("damage", ["delete", "garble", "digest_lost"])
def test_damaged_checkpoints_are_named_and_collected_again(reference, copy, damage):
    import jax
    import numpy as np

    from gptjax.collect.checkpoints import params_reader
    from gptjax.models.checkpoint import restore_model

    runs = Workdir(copy).runs
    folder = runs.checkpoint_dir(4)
    if damage == "delete":
        shutil.rmtree(folder)
    elif damage == "garble":
        blob = max(
            (p for p in (folder / "4").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size
        )
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0xFF
        blob.write_bytes(bytes(data))
    else:
        runs.checkpoint_digest_file(4).unlink()
    base = restore_model(copy / "model")
    params_at, _ = params_reader(runs, base)
    with pytest.raises(ValueError, match="run_00004"):  # never silently the base model
        params_at(4, 4)
    collect(copy)  # the same command recollects the run and its checkpoints
    assert run_bytes(copy) == run_bytes(reference)
    healed, _ = params_reader(runs, base)
    want, _ = params_reader(Workdir(reference).runs, base)
    for a, b in zip(jax.tree.leaves(healed(4, 4)), jax.tree.leaves(want(4, 4)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("damage", ["garble", "truncate"])
def test_damaged_base_model_is_named_not_loaded(copy, damage):
    model_dir = copy / "model"
    blob = max(
        (p for p in (model_dir / "params").rglob("*") if p.is_file()),
        key=lambda p: p.stat().st_size,
    )
    data = bytearray(blob.read_bytes())
    if damage == "garble":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    blob.write_bytes(bytes(data))
    runs_before = run_bytes(copy)
    with pytest.raises(ValueError, match="model.*differ from their digest.*delete it"):
        collect(copy)
    assert run_bytes(copy) == runs_before  # nothing collected from a damaged model
