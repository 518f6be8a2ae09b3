"""Influence queries on a finished workdir: the Python API (gptjax.pipeline.queries) and the
command line (python -m gptjax.query), on one tiny pipeline run (collect + simulate, every
step's parameters saved for TracIn, some labels flipped)."""

from __future__ import annotations

import csv
import json
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gptjax import paths
from gptjax.pipeline import Workdir, run_pipeline
from gptjax.pipeline import queries as q
from gptjax.query import one_line
from simulator import FittedSimulator, influence

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "tests" / "configs" / "tiny.py"

if not paths.pythia_tokenizer().is_file():
    pytest.skip("the Pythia tokenizer is not installed", allow_module_level=True)
try:
    paths.minilm_dir()
except FileNotFoundError:
    pytest.skip("all-MiniLM-L6-v2 is not installed", allow_module_level=True)

K = 5
P = 24  # tiny.py: data.pool_size


def pipeline_config():
    c = runpy.run_path(str(TINY))["get_config"]()
    c.stages = "collect,simulate"
    c.data.label_noise = 0.25  # 6 flipped labels in the training pool
    c.collect.save_params = "all"
    for section in (c.simulator.gptfluence, c.simulator.simfluence):
        section.epochs = 3
        section.min_steps = 0
        section.warmup_steps = 5
        section.batch_size = 32
    c.simulator.gptfluence.hidden = 16
    c.simulator.gptfluence.out_dim = 16
    return c


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("query")
    run_pipeline(pipeline_config(), root)
    return root


@pytest.fixture(scope="module")
def pools(workdir) -> dict:
    return json.loads(Workdir(workdir).pools_file.read_text())


@pytest.fixture(scope="module")
def effects(workdir) -> np.ndarray:
    """[P+U, N] one-step effects computed here from the saved simulator and the runs."""
    wd = Workdir(workdir)
    fitted = FittedSimulator.restore(wd.simulator_dir("loss", "gptfluence"))
    y = wd.runs.load().metrics["loss"]
    y_ref = y[:3].mean(axis=(0, 1))  # split "3,1,2": runs 0..2 train the simulators
    return influence.fitted_effects(fitted, "one_step", y_ref=y_ref)


@pytest.fixture(scope="module")
def top(workdir) -> dict:
    return q.top_influences(workdir, test_id=1, k=K)


def query(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gptjax.query", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
    )


# ---- the Python API ------------------------------------------------------------------------


def test_top_influences_ranks_the_simulators_effects(top, effects, pools):
    sim = top["simulator"]
    assert len(sim["helpful"]) == K and len(sim["harmful"]) == K
    column = effects[:P, 1]
    order = np.argsort(column, kind="stable")  # loss: most negative = most helpful
    assert [r["pool_id"] for r in sim["helpful"]] == order[:K].tolist()
    assert [r["pool_id"] for r in sim["harmful"]] == order[::-1][:K].tolist()
    helpful = [r["effect"] for r in sim["helpful"]]
    harmful = [r["effect"] for r in sim["harmful"]]
    assert helpful == sorted(helpful) and harmful == sorted(harmful, reverse=True)
    assert helpful[0] < harmful[0]
    np.testing.assert_allclose(helpful, column[order[:K]], rtol=1e-6)
    for row in sim["helpful"] + sim["harmful"]:
        example = pools["train"][row["pool_id"]]
        assert (row["input"], row["target"]) == (example["input"], example["target"])
        assert row["flipped"] == pools["flipped"][row["pool_id"]]
        assert isinstance(row["related"], bool)  # the demo task has a ground truth
    assert top["test"]["input"] == pools["test"][1]["input"]


def test_top_influences_puts_tracin_beside_it(top, workdir):
    tr = top["tracin"]
    assert tr["available"], tr["reason"]
    assert tr["run"] == 0  # the first training run
    steps = Workdir(workdir).runs.read(0).curriculum.shape[0]
    assert set(tr["checkpoints"]) <= set(range(steps + 1)) and len(tr["checkpoints"]) > 1
    assert len(tr["helpful"]) == K and len(tr["harmful"]) == K
    helpful = [r["effect"] for r in tr["helpful"]]
    harmful = [r["effect"] for r in tr["harmful"]]
    assert helpful == sorted(helpful) and harmful == sorted(harmful, reverse=True)
    assert np.isfinite(helpful + harmful).all() and helpful[0] < harmful[0]
    assert 0 <= top["agreement"]["helpful_overlap"] <= K
    assert -1 <= top["agreement"]["spearman"] <= 1


def test_tracin_is_unavailable_without_parameter_checkpoints(workdir, tmp_path):
    copy = tmp_path / "wd"
    shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns("checkpoints"))
    res = q.top_influences(copy, test_id=0, k=3)
    assert not res["tracin"]["available"]
    assert "save_params" in res["tracin"]["reason"]
    assert len(res["simulator"]["helpful"]) == 3


def test_tracin_takes_the_first_test_run_when_only_the_test_runs_saved(workdir, top, tmp_path):
    """As collect.save_params_runs = "test" leaves a workdir: the training and validation
    runs (0..3 of split 3,1,2) saved nothing, so TracIn reads the first test run's
    checkpoints."""
    copy = tmp_path / "wd"
    shutil.copytree(workdir, copy)
    for run in range(4):
        shutil.rmtree(Workdir(copy).runs.checkpoint_dir(run))
    tr = q.top_influences(copy, test_id=1, k=K)["tracin"]
    assert tr["available"], tr["reason"]
    assert tr["run"] == 4
    assert tr["helpful"] != top["tracin"]["helpful"]  # another run's checkpoints
    named = q.top_influences(copy, test_id=1, k=K, tracin_run=0)["tracin"]
    assert not named["available"] and "save_params_runs" in named["reason"]


def test_simulate_curriculum_is_the_simulators_rollout(workdir, pools):
    batches = [[0, 5], [pools["train"][3]["input"], 7], [pools["train"][9]["encoder_text"]]]
    res = q.simulate_curriculum(workdir, batches)
    curriculum = np.array([[0, 5], [3, 7], [9, -1]], np.int32)
    np.testing.assert_array_equal(res["curriculum"], curriculum)
    wd = Workdir(workdir)
    y0 = wd.runs.read(0).metrics["loss"][0]  # the base model's losses, before any step
    np.testing.assert_allclose(res["y0"], y0, rtol=1e-6)
    fitted = FittedSimulator.restore(wd.simulator_dir("loss", "gptfluence"))
    expected = fitted.rollout(curriculum[None], y0[None])[0]
    assert res["trajectories"].shape == (4, len(pools["test"]))
    np.testing.assert_allclose(res["trajectories"], expected, rtol=1e-5, atol=1e-6)
    assert res["warnings"]  # a batch of one, where the runs had two (batch_reduce="sum")


def test_simulate_curriculum_names_unknown_texts(workdir):
    with pytest.raises(ValueError, match="'no such example'"):
        q.simulate_curriculum(workdir, [[0, 1], ["no such example", 2]])
    with pytest.raises(ValueError, match="pool id 999"):
        q.simulate_curriculum(workdir, [[999]])


def test_mislabel_ranking_shows_the_flipped_labels(workdir, effects, pools):
    res = q.mislabel_ranking(workdir)
    ids = [r["pool_id"] for r in res["ranking"]]
    assert sorted(ids) == list(range(P))
    np.testing.assert_array_equal(ids, influence.mislabel_ranking(effects[:P]))
    harm = [r["harm"] for r in res["ranking"]]
    assert harm == sorted(harm, reverse=True)
    flipped = pools["flipped"][:P]
    assert res["flipped_total"] == sum(flipped) == 6
    assert [r["flipped"] for r in res["ranking"]] == [flipped[i] for i in ids]
    assert res["flipped_in_top"] == sum(flipped[i] for i in ids[:6])


def test_top_k_precision_against_the_ground_truth(workdir, effects):
    rel = np.load(Workdir(workdir).relatedness_file)[:P] > 0
    res = q.top_k_precision(workdir, k=3)
    per_test = [rel[np.argsort(effects[:P, n], kind="stable")[:3], n].mean() for n in range(8)]
    np.testing.assert_allclose(res["per_test"], per_test)
    assert res["precision"] == pytest.approx(np.mean(per_test))
    assert res["random"] == pytest.approx(rel.mean())
    assert 0 < res["random"] < 1


def test_api_errors(workdir, tmp_path):
    with pytest.raises(ValueError, match="out of range"):
        q.top_influences(workdir, test_id=8)
    with pytest.raises(ValueError, match="no fitted simulator 'nope'"):
        q.top_influences(workdir, test_id=0, simulator="nope")
    with pytest.raises(ValueError, match="no such workdir"):
        q.mislabel_ranking(tmp_path / "missing")


# ---- the command line --------------------------------------------------------------------


def _table_rows(out: str, title: str) -> list[str]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    return lines[start + 2 : start + 2 + K]  # after the title and the header


def test_cli_prints_tables_and_writes_json_and_csv(workdir, tmp_path, pools):
    curriculum = tmp_path / "batches.jsonl"
    batches = [[0, 1], [2, pools["train"][4]["input"]]]
    curriculum.write_text("\n".join(json.dumps(b) for b in batches) + "\n")
    out_json, out_csv = tmp_path / "out.json", tmp_path / "out.csv"
    args = ["--workdir", str(workdir), "--test", "2", "--curriculum", str(curriculum)]
    args += ["--mislabels", "--json", str(out_json), "--csv", str(out_csv)]
    proc = query(*args)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    answers = json.loads(out_json.read_text())
    top = answers["top_influences"]
    for kind in ("helpful", "harmful"):
        rows = _table_rows(out, f"top {K} {kind} training examples")
        assert len(rows) == K, out
        sim_effects, tracin_effects = [], []
        for line, sim, tr in zip(rows, top["simulator"][kind], top["tracin"][kind], strict=True):
            for row in (sim, tr):
                assert one_line(row["input"] + row["target"]) in line
            numbers = [float(x) for x in re.findall(r"[+-]\d+\.\d{4}\b", line)]
            assert len(numbers) == 2, line  # the simulator's effect, then TracIn's
            sim_effects.append(numbers[0])
            tracin_effects.append(numbers[1])
        for column in (sim_effects, tracin_effects):
            assert column == sorted(column, reverse=kind == "harmful")
    assert "tracin id" in out
    match = re.search(r"top-5 precision .*: gptfluence (\d\.\d+), random (\d\.\d+)", out)
    assert match, out
    assert float(match.group(1)) == pytest.approx(answers["top_k_precision"]["precision"], abs=1e-3)

    traj = np.array(answers["curriculum"]["trajectories"])
    wd = Workdir(workdir)
    y0 = wd.runs.read(0).metrics["loss"][0]
    fitted = FittedSimulator.restore(wd.simulator_dir("loss", "gptfluence"))
    expected = fitted.rollout(np.array([[[0, 1], [2, 4]]]), y0[None])[0]
    assert traj.shape == (3, len(pools["test"]))
    np.testing.assert_allclose(traj, expected, rtol=1e-5, atol=1e-6)
    assert "flipped labels: 6 of 24" in out

    with out_csv.open() as f:
        rows = list(csv.DictReader(f))
    listed = [r for r in rows if r["query"] == "top_influences"]
    assert len(listed) == 4 * K  # helpful and harmful, simulator and TracIn
    assert {r["method"] for r in listed} == {"gptfluence", "tracin"}
    assert len([r for r in rows if r["query"] == "mislabels"]) == P
    first = next(r for r in listed if r["method"] == "gptfluence" and r["kind"] == "helpful")
    assert int(first["pool_id"]) == top["simulator"]["helpful"][0]["pool_id"]
    assert first["input"] == pools["train"][int(first["pool_id"])]["input"]


def test_cli_says_when_tracin_is_unavailable(workdir, tmp_path):
    copy = tmp_path / "wd"
    shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns("checkpoints"))
    proc = query("--workdir", str(copy), "--test", "0", "--simulator", "simfluence")
    assert proc.returncode == 0, proc.stderr
    assert "TracIn: unavailable" in proc.stdout and "simfluence id" in proc.stdout


def _bad_inputs(workdir: Path, tmp: Path) -> list[tuple[list[str], str]]:
    unfinished = tmp / "unfinished"
    unfinished.mkdir()
    shutil.copy(Workdir(workdir).config_file, unfinished / "config.json")
    broken = tmp / "broken.json"
    broken.write_text("[[0, 1], [2")
    unknown = tmp / "unknown.jsonl"
    unknown.write_text('[0]\n["not a pool text"]\n')
    wrong_kind = tmp / "batches.txt"
    wrong_kind.write_text("[[0]]")
    w = ["--workdir", str(workdir)]
    return [
        (["--workdir", str(tmp / "missing"), "--test", "0"], "no such workdir"),
        (["--workdir", str(unfinished), "--test", "0"], "not a finished workdir"),
        ([*w, "--test", "8"], "out of range"),
        ([*w, "--test", "-1"], "out of range"),
        ([*w, "--curriculum", str(broken)], "not valid JSON"),
        ([*w, "--curriculum", str(unknown)], "'not a pool text'"),
        ([*w, "--curriculum", str(wrong_kind)], ".json or .jsonl"),
        ([*w, "--curriculum", str(tmp / "absent.json")], "does not exist"),
        (w, "nothing to ask"),
    ]


def test_cli_bad_inputs_exit_2_with_one_line(workdir, tmp_path):
    for args, message in _bad_inputs(workdir, tmp_path):
        proc = query(*args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, proc.stderr)
        assert message in lines[0], (args, lines[0])
        assert "Traceback" not in proc.stderr
