"""GPTDynamics import/export against hand-written fixtures in the authors' layout
(tests/fixtures/gptdynamics: runs/<task>/output_<task>_..._seed-<k>/ and the id -> text files),
and a reader written here that pairs steps as their SimfluenceDataset does."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from gptjax import gptdynamics as gd
from gptjax.store import Dynamics

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "gptdynamics"
RTE = FIXTURES / "runs" / "rte"
FLAN = FIXTURES / "runs" / "flan"
RTE_RUN = (
    "output_rte_bs-2_shot-8_sample-6_model-pythia-410m-deduped_lr-5e-7_weight-decay-0.001"
    "_epoch-1_seed-{}"
)
FLAN_RUN = (
    "output_flan_bs-2_shot-6_sample-6_model-pythia-410m-deduped_lr-2e-7_weight-decay-0.001"
    "_epoch-1_loss-output-token_seed-{}"
)
#: the fixture's mixture: test ids sst2 0, rte 1, webnlg 2 (webnlg alone has bleu)
TINY_MIXTURE = gd.Mixture(
    (
        gd.SubTask("sst2", 0, 1),
        gd.SubTask("rte", 1, 1),
        gd.SubTask("webnlg", 2, 1, ("loss", "bleu")),
    ),
    num_train=6,
)


def make_dynamics(seed: int = 0, runs: int = 2, steps: int = 4, batch: int = 3, tests: int = 3):
    rng = np.random.default_rng(seed)
    loss = rng.uniform(0.1, 4.0, (runs, steps + 1, tests)).astype(np.float32)
    loss[1, 3:, 2] = np.nan  # a run that diverged after step 2 on one example
    bleu = rng.uniform(0, 100, (runs, steps + 1, tests)).astype(np.float32)
    bleu[:, 1::2] = np.nan  # measured every other step
    return Dynamics(
        curricula=rng.integers(0, 10, (runs, steps, batch)).astype(np.int32),
        metrics={"loss": loss, "bleu": bleu},
        lr=rng.uniform(0, 1e-4, (runs, steps)).astype(np.float32),
        train_loss=rng.uniform(0, 3, (runs, steps)).astype(np.float32),
        valid=np.array([True, False]),
        subsets=[np.arange(10, dtype=np.int32) for _ in range(runs)],
        meta=[{"status": "ok", "seed": 1}, {"status": "diverged", "failed_step": 3, "seed": 2}],
    )


POOL = [f"train example {i}" for i in range(10)]
TESTS = [f"test example {n}" for n in range(3)]


# --------------------------------------------------------------- a reader with their rules


def their_pairs(run_dir: Path, metric: str, train_file: Path, eval_file: Path):
    """What their SimfluenceDataset + BaseDataset build from a run folder, written from the
    rules they follow: every line of train_samples_id.json maps "step" -> "samples_id"; in
    all_<metric>_trajectory.out each consecutive pair of points (prev, cur) is one simulator
    example, made with the batch train_samples_id[cur step]; the very first point pairs with
    train_samples_id[first step] (their self-influence mode); texts by "id" -> "input"."""
    batches = {}
    for line in (run_dir / "train_samples_id.json").read_text().splitlines(keepends=True):
        row = json.loads(line)
        batches[row["step"]] = row["samples_id"]
    train_text = {}
    for line in train_file.read_text().splitlines():
        row = json.loads(line)
        train_text[row["id"]] = row["input"]
    eval_text = {}
    for line in eval_file.read_text().splitlines():
        row = json.loads(line)
        eval_text[row["id"]] = row["input"]
    pairs, firsts = [], []
    for line in (run_dir / f"all_{metric}_trajectory.out").read_text().splitlines(keepends=True):
        row = json.loads(line)
        points = [(p["step"], p["loss"]) for p in row["loss_trajectory"]]
        first_step, first_value = points[0]
        firsts.append((row["id"], first_step, first_value, batches[first_step]))
        for (prev_step, prev_value), (cur_step, cur_value) in zip(points, points[1:], strict=False):
            ids = batches[cur_step]
            pairs.append(
                {
                    "test_id": row["id"],
                    "prev_step": prev_step,
                    "prev": prev_value,
                    "cur_step": cur_step,
                    "cur": cur_value,
                    "samples_id": ids,
                    "samples_texts": [train_text[i] for i in ids],
                    "test_text": eval_text[row["id"]],
                }
            )
    return pairs, firsts


def same(a: float, b: float) -> bool:
    return (np.isnan(a) and np.isnan(b)) or np.float32(a) == np.float32(b)


def test_their_reader_pairs_our_export_step_by_step(tmp_path):
    dyn = make_dynamics()
    out = gd.export_dynamics(
        dyn, tmp_path / "export", train_texts=POOL, test_texts=TESTS, task="demo"
    )
    train_file, eval_file = out / "demo_train_0-9.json", out / "demo_eval_0-2.json"
    K, T1, N = dyn.metrics["loss"].shape
    T = T1 - 1
    for k in range(K):
        run_dir = out / f"run_{k}"
        for metric, y in dyn.metrics.items():
            pairs, firsts = their_pairs(run_dir, metric, train_file, eval_file)
            assert len(pairs) == N * (T - 1) and len(firsts) == N
            for p in pairs:
                s, n = p["cur_step"], p["test_id"]
                assert p["prev_step"] == s - 1 and 2 <= s <= T
                # the value after step s, reached with the batch of step s
                assert same(p["cur"], y[k, s, n]) and same(p["prev"], y[k, s - 1, n])
                assert p["samples_id"] == dyn.curricula[k, s - 1].tolist()
                assert p["samples_texts"] == [POOL[i] for i in dyn.curricula[k, s - 1]]
                assert p["test_text"] == TESTS[n]
            for n, s, value, ids in firsts:
                assert s == 1 and same(value, y[k, 1, n])
                assert ids == dyn.curricula[k, 0].tolist()
        # their reader opens exactly these names; our extra files match none of them
        assert sorted(p.name for p in run_dir.glob("all_*_trajectory.out")) == [
            "all_bleu_trajectory.out",
            "all_loss_trajectory.out",
        ]
        assert (run_dir / "pretrain_loss.json").is_file() and (
            run_dir / "gptjax_run.json"
        ).is_file()


def test_export_lines_are_written_as_their_converters_write_them(tmp_path):
    dyn = make_dynamics()
    gd.export_dynamics(dyn, tmp_path / "export")  # the old call still works
    run = tmp_path / "export" / "run_1"
    first = (run / "train_samples_id.json").read_text().splitlines()[0]
    assert first == json.dumps({"step": 1, "samples_id": dyn.curricula[1, 0].tolist()})
    line = (run / "all_loss_trajectory.out").read_text().splitlines()[2]
    assert line.startswith('{"id": 2, "loss_trajectory": [{"step": 1, "loss": ')
    assert '{"step": 3, "loss": NaN}' in line  # NaN is the bare token json.dumps writes
    assert len(json.loads(line)["loss_trajectory"]) == 4  # T points, no pre-training value
    pre = (run / "pretrain_loss.json").read_text().splitlines()[2]
    assert json.loads(pre) == {"id": 2, "step": 0, "loss": float(dyn.metrics["loss"][1, 0, 2])}


def test_round_trip_is_exact(tmp_path):
    dyn = make_dynamics()
    gd.export_dynamics(dyn, tmp_path / "export", train_texts=POOL, test_texts=TESTS)
    back = gd.import_dynamics(tmp_path / "export")
    np.testing.assert_array_equal(back.curricula, dyn.curricula)
    assert back.metrics.keys() == dyn.metrics.keys()
    for name, y in dyn.metrics.items():
        assert back.metrics[name].dtype == np.float32
        np.testing.assert_array_equal(back.metrics[name], y)  # NaN where NaN, row 0 included
    np.testing.assert_array_equal(back.lr, dyn.lr)
    np.testing.assert_array_equal(back.train_loss, dyn.train_loss)
    np.testing.assert_array_equal(back.valid, dyn.valid)
    assert back.meta == dyn.meta
    for a, b in zip(back.subsets, dyn.subsets, strict=True):
        np.testing.assert_array_equal(a, b)
    assert gd.import_texts(tmp_path / "export" / "gptjax_train_0-9.json") == POOL
    assert gd.import_texts(tmp_path / "export" / "gptjax_eval_0-2.json") == TESTS


def test_export_refuses_what_would_not_read_back(tmp_path):
    dyn = make_dynamics()
    dyn.metrics["loss"][1, 2, 1] = np.inf
    with pytest.raises(ValueError, match=re.escape("run 1, metric loss: value at (2, 1) is inf")):
        gd.export_dynamics(dyn, tmp_path / "a")
    assert not (tmp_path / "a").exists()  # checked before anything is written
    dyn = make_dynamics()
    with pytest.raises(ValueError, match="train_texts"):
        gd.export_dynamics(dyn, tmp_path / "b", train_texts=POOL[:5], test_texts=TESTS)
    with pytest.raises(ValueError, match="test_texts"):
        gd.export_dynamics(dyn, tmp_path / "c", train_texts=POOL, test_texts=TESTS[:2])
    gd.export_dynamics(dyn, tmp_path / "d")
    with pytest.raises(FileExistsError, match="run_0"):
        gd.export_dynamics(dyn, tmp_path / "d")  # no stale runs mixed into an export


# --------------------------------------------------------------- their layout


def test_their_finetuning_runs_import():
    dyn = gd.import_dynamics(RTE, pool_size=8)
    assert dyn.curricula.shape == (3, 3, 2) and dyn.metrics["loss"].shape == (3, 4, 3)
    # natural order: seed-1, seed-2, seed-10; batch of step s = curriculum[s-1]
    assert [m["source"].rsplit("-", 1)[1] for m in dyn.meta] == ["1", "2", "10"]
    np.testing.assert_array_equal(dyn.curricula[0], [[3, 0], [5, 7], [1, 6]])
    np.testing.assert_array_equal(dyn.curricula[2], [[7, 5], [3, 2], [4, 0]])
    y = dyn.metrics["loss"][0]
    assert np.isnan(y[0]).all()  # no pre-training value in their layout
    assert y[1, 0] == np.float32(2.661651134490967)  # after step 1, batch [3, 0]
    np.testing.assert_array_equal(y[1:, 1], np.float32([1.5, 1.25, 1.125]))  # lines sorted by id
    np.testing.assert_array_equal(y[1:, 2], np.float32([0.875, 0.75, 0.8125]))
    assert dyn.valid.all() and np.isnan(dyn.lr).all()
    texts = gd.import_texts(FIXTURES / "sft_tasks" / "rte" / "rte_0_7_train.json")
    assert len(texts) == 8 and texts[3].startswith("{Bo won.}")
    assert len(gd.import_texts(FIXTURES / "sft_tasks" / "rte" / "rte_0_2_eval.json")) == 3


def test_their_runs_import_from_a_list_in_the_given_order():
    folders = [RTE / RTE_RUN.format(10), RTE / RTE_RUN.format(1)]
    dyn = gd.import_dynamics(folders)
    np.testing.assert_array_equal(dyn.curricula[0, 0], [7, 5])


def test_their_mixture_imports_with_offsets():
    dyn = gd.import_dynamics(FLAN, mixture=TINY_MIXTURE)
    assert dyn.metrics["loss"].shape == (2, 4, 3) and dyn.metrics["bleu"].shape == (2, 4, 3)
    loss, bleu = dyn.metrics["loss"], dyn.metrics["bleu"]
    # points written out of step order are put in order
    np.testing.assert_array_equal(loss[0, 1:, 2], np.float32([3.5, 3.25, 3.0]))
    np.testing.assert_array_equal(loss[1, 1:, 0], np.float32([1.75, 1.5, 1.25]))
    # bleu exists only for webnlg (test id 2); sst2 and rte stay NaN; NaN token read as NaN
    assert np.isnan(bleu[:, :, :2]).all()
    np.testing.assert_array_equal(bleu[0, 1:, 2], np.float32([12.5, 18.75, 25.0]))
    assert np.isnan(bleu[1, 2, 2]) and bleu[1, 3, 2] == 31.25
    assert dyn.meta[0]["subtasks"] == {"sst2": [0, 1], "rte": [1, 2], "webnlg": [2, 3]}
    assert gd.import_texts(FIXTURES / "it_tasks" / "flan_eval_0_2.json")[2].startswith("Describe")


def test_flan_mixture_has_the_authors_offsets():
    spans = gd.FLAN_MIXTURE.spans()
    assert spans == {
        "sst2": [0, 200],
        "rte": [200, 477],
        "boolq": [477, 677],
        "webnlg": [677, 855],
        "wmt16_de_en": [855, 1055],
    }
    assert gd.FLAN_MIXTURE.num_test == 1055 and gd.FLAN_MIXTURE.num_train == 1600
    assert gd.FLAN_MIXTURE.ids_for("bleu") == list(range(677, 1055))
    ood = gd.FLAN_MIXTURE.select("webnlg")
    assert ood.num_test == 1055 and ood.ids_for("loss") == list(range(677, 855))
    with pytest.raises(ValueError, match="overlap"):
        gd.Mixture((gd.SubTask("a", 0, 3), gd.SubTask("b", 2, 3)))


# --------------------------------------------------------------- validation


def copy_runs(tmp_path: Path, src: Path = RTE) -> Path:
    root = tmp_path / src.name
    shutil.copytree(src, root)
    return root


def edit(path: Path, fn) -> None:
    lines = path.read_text().splitlines()
    path.write_text("".join(line + "\n" for line in fn(lines)))


def replace_line(n: int, text: str):
    return lambda lines: [text if i == n - 1 else line for i, line in enumerate(lines)]


def sub_line(n: int, old: str, new: str):
    def fn(lines):
        assert old in lines[n - 1], (old, lines[n - 1])
        return [line.replace(old, new) if i == n - 1 else line for i, line in enumerate(lines)]

    return fn


S, L = "train_samples_id.json", "all_loss_trajectory.out"
# (case, seed of the run folder, file, edit, kwargs, the message after "<file>, line <n>: ")
LINE_CASES = [
    (
        "duplicate step",
        2,
        S,
        replace_line(3, '{"step": 2, "samples_id": [0, 3]}'),
        {},
        3,
        "step 2 again (first on line 2)",
    ),
    ("step 0", 1, S, sub_line(1, '"step": 1', '"step": 0'), {}, 1, "steps start at 1"),
    ("string step", 1, S, sub_line(1, '"step": 1', '"step": "1"'), {}, 1, "not an integer"),
    (
        "batch size",
        1,
        S,
        sub_line(2, "[5, 7]", "[5, 7, 2]"),
        {},
        2,
        "the batch of step 2 has 3 ids, the one on line 1 has 2",
    ),
    (
        "id outside the pool",
        1,
        S,
        sub_line(3, "[1, 6]", "[1, 8]"),
        {"pool_size": 8},
        3,
        "sample id 8 of step 3 is outside the pool (the pool has ids 0..7)",
    ),
    ("negative id", 1, S, sub_line(3, "[1, 6]", "[1, -6]"), {}, 3, "sample id -6"),
    ("float id", 1, S, sub_line(3, "[1, 6]", "[1, 6.0]"), {}, 3, "not an integer"),
    ("no step key", 1, S, sub_line(2, '"step": 2', '"stp": 2'), {}, 2, 'no "step" key'),
    (
        "no samples_id key",
        1,
        S,
        sub_line(2, '"samples_id"', '"samples"'),
        {},
        2,
        'no "samples_id" key',
    ),
    (
        "not JSON",
        1,
        S,
        replace_line(2, "{'step': 2, 'samples_id': [5, 7]}"),
        {},
        2,
        "not valid JSON",
    ),
    ("blank line", 1, S, lambda lines: [lines[0], "", *lines[1:]], {}, 2, "blank line"),
    (
        "duplicate key",
        1,
        S,
        sub_line(1, '{"step": 1,', '{"step": 1, "step": 2,'),
        {},
        1,
        'key "step" appears twice',
    ),
    ("no id key", 1, L, sub_line(2, '"id": 2', '"idx": 2'), {}, 2, 'no "id" key'),
    (
        "no loss_trajectory key",
        1,
        L,
        sub_line(3, '"loss_trajectory"', '"trajectory"'),
        {},
        3,
        'no "loss_trajectory" key',
    ),
    (
        "no step in a point",
        1,
        L,
        sub_line(3, '{"step": 2, "loss": 1.25}', '{"loss": 1.25}'),
        {},
        3,
        'no "step" key in point 1 of test id 1',
    ),
    (
        "no loss in a point",
        1,
        L,
        sub_line(3, '"loss": 1.25', '"value": 1.25'),
        {},
        3,
        'no "loss" key in point 1 of test id 1',
    ),
    (
        "duplicate trajectory step",
        1,
        L,
        sub_line(2, '"step": 3', '"step": 2'),
        {},
        2,
        "test id 2 has step 2 twice",
    ),
    (
        "missing trajectory step",
        1,
        L,
        sub_line(2, ', {"step": 3, "loss": 0.8125}', ""),
        {},
        2,
        "test id 2 has no value at step(s) 3",
    ),
    (
        "T+1 points",
        1,
        L,
        sub_line(1, "]}", ', {"step": 4, "loss": 1.0}]}'),
        {},
        1,
        "has a value at step 4, but train_samples_id.json has steps 1..3 (T+1 points",
    ),
    (
        "null value",
        1,
        L,
        sub_line(3, '"loss": 1.25', '"loss": null'),
        {},
        3,
        "is null (a missing value is written as the bare token NaN)",
    ),
    (
        "string value",
        1,
        L,
        sub_line(3, '"loss": 1.25', '"loss": "1.25"'),
        {},
        3,
        'is "1.25", not a number',
    ),
    (
        "string NaN",
        1,
        L,
        sub_line(3, '"loss": 1.25', '"loss": "NaN"'),
        {},
        3,
        'is "NaN", not a number',
    ),
    ("Infinity", 1, L, sub_line(3, '"loss": 1.25', '"loss": Infinity'), {}, 3, "infinite"),
    ("overflow", 1, L, sub_line(3, '"loss": 1.25', '"loss": 1e999'), {}, 3, "infinite"),
    (
        "beyond float32",
        1,
        L,
        sub_line(3, '"loss": 1.25', '"loss": 1e39'),
        {},
        3,
        "too large for float32",
    ),
    ("boolean value", 1, L, sub_line(3, '"loss": 1.25', '"loss": true'), {}, 3, "not a number"),
    (
        "duplicate test id",
        1,
        L,
        sub_line(3, '"id": 1', '"id": 2'),
        {},
        3,
        "test id 2 again (first on line 2)",
    ),
    ("negative test id", 1, L, sub_line(3, '"id": 1', '"id": -1'), {}, 3, "test id -1 is negative"),
]


@pytest.mark.parametrize(
    "seed, name, fn, kwargs, line, message",
    [case[1:] for case in LINE_CASES],
    ids=[case[0] for case in LINE_CASES],
)
def test_import_refuses_naming_file_and_line(tmp_path, seed, name, fn, kwargs, line, message):
    root = copy_runs(tmp_path)
    path = root / RTE_RUN.format(seed) / name
    edit(path, fn)
    with pytest.raises(ValueError) as err:
        gd.import_dynamics(root, **kwargs)
    assert str(err.value).startswith(f"{path}, line {line}: "), str(err.value)
    assert message in str(err.value)
    # the same file, untouched, imports (the case is what fails, not the fixture)
    assert gd.import_dynamics(RTE, **kwargs).num_runs == 3


FILE_CASES = [
    (
        "missing step",
        1,
        S,
        lambda lines: [lines[0], lines[2]],
        "no batch for step(s) 2; steps must be 1..3",
    ),
    ("empty samples file", 1, S, lambda lines: [], "empty (no training steps)"),
    (
        "test ids not 0..N-1",
        1,
        L,
        sub_line(3, '"id": 1', '"id": 3'),
        "test ids must be 0..N-1; id(s) 1 missing",
    ),
    # seed-10 holds ids 0..1 only: a test-id set that differs from seed-1's
    ("test ids differ across runs", 10, L, lambda lines: lines[:2], "test ids 0..1, but"),
]


@pytest.mark.parametrize(
    "seed, name, fn, message", [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES]
)
def test_import_refuses_naming_the_file(tmp_path, seed, name, fn, message):
    root = copy_runs(tmp_path)
    path = root / RTE_RUN.format(seed) / name
    edit(path, fn)
    with pytest.raises(ValueError) as err:
        gd.import_dynamics(root)
    assert str(err.value).startswith(f"{path}"), str(err.value)
    assert message in str(err.value)


def test_steps_differ_across_runs(tmp_path):
    root = copy_runs(tmp_path)
    run = root / RTE_RUN.format(2)
    edit(run / S, lambda lines: lines[:2])
    edit(run / L, lambda lines: [re.sub(r', \{"step": 3, [^}]*\}', "", line) for line in lines])
    with pytest.raises(ValueError, match=re.escape(f"{run / S}: 2 steps, but ")):
        gd.import_dynamics(root)


def test_batch_size_differs_across_runs(tmp_path):
    root = copy_runs(tmp_path)
    path = root / RTE_RUN.format(2) / S
    edit(path, lambda lines: [re.sub(r"\]\}$", ", 7]}", line) for line in lines])
    with pytest.raises(ValueError, match=re.escape(f"{path}, line 1: batches of 3, but ")):
        gd.import_dynamics(root)


def test_run_folder_without_samples_file_is_refused(tmp_path):
    root = copy_runs(tmp_path)
    (root / RTE_RUN.format(2) / S).unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(root / RTE_RUN.format(2) / S))):
        gd.import_dynamics(root)
    # an empty run folder with their name is a run folder too
    root = copy_runs(tmp_path / "b")
    (root / RTE_RUN.format(11)).mkdir()
    with pytest.raises(FileNotFoundError, match="seed-11"):
        gd.import_dynamics(root)


def test_our_runs_are_not_renumbered(tmp_path):
    gd.export_dynamics(make_dynamics(runs=2), tmp_path / "e", run_folder="run_{k}")
    (tmp_path / "e" / "run_1").rename(tmp_path / "e" / "run_2")
    with pytest.raises(FileNotFoundError, match="run_1 is missing"):
        gd.import_dynamics(tmp_path / "e")


def test_nan_token_is_accepted_and_means_nan(tmp_path):
    root = copy_runs(tmp_path)
    edit(root / RTE_RUN.format(1) / L, sub_line(3, '"loss": 1.25', '"loss": NaN'))
    y = gd.import_dynamics(root).metrics["loss"]
    assert np.isnan(y[0, 2, 1]) and np.isfinite(y[0, 1:, [0, 2]]).all()


def test_pretrain_file_is_checked(tmp_path):
    gd.export_dynamics(make_dynamics(), tmp_path / "e")
    path = tmp_path / "e" / "run_0" / "pretrain_loss.json"
    edit(path, sub_line(2, '"step": 0', '"step": 1'))
    with pytest.raises(ValueError, match=re.escape(f"{path}, line 2: step 1; the pre-training")):
        gd.import_dynamics(tmp_path / "e")
    edit(path, lambda lines: lines[:1])
    with pytest.raises(ValueError, match=re.escape(f"{path}: no pre-training value")):
        gd.import_dynamics(tmp_path / "e")


def test_mixture_metric_outside_its_subtasks_is_refused(tmp_path):
    root = copy_runs(tmp_path, FLAN)
    path = root / FLAN_RUN.format(2) / "all_bleu_trajectory.out"
    edit(path, lambda lines: [*lines, lines[0].replace('"id": 2', '"id": 0')])
    with pytest.raises(ValueError, match=re.escape(f"{path}, line 2: test id 0 belongs to no")):
        gd.import_dynamics(root, mixture=TINY_MIXTURE)
    edit(path, lambda lines: lines[:1])
    loss = root / FLAN_RUN.format(2) / L
    edit(loss, lambda lines: [line for line in lines if '"id": 1,' not in line])
    with pytest.raises(ValueError, match=re.escape(f"{loss}: no line for test id(s) 1")):
        gd.import_dynamics(root, mixture=TINY_MIXTURE)
    # without the mixture, bleu's ids (2 only) are not 0..N-1: refused, not misplaced
    shutil.rmtree(root)
    root = copy_runs(tmp_path, FLAN)
    with pytest.raises(ValueError, match="test ids must be 0..N-1"):
        gd.import_dynamics(root)
    # train ids beyond the mixture's pool
    edit(root / FLAN_RUN.format(1) / S, sub_line(1, "[4, 1]", "[6, 1]"))
    with pytest.raises(ValueError, match="line 1: sample id 6 of step 1 is outside the pool"):
        gd.import_dynamics(root, mixture=TINY_MIXTURE)
