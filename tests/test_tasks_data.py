"""Parse every shared data file a task uses and find the row counts its README states.

Skipped cleanly when the data folder (``$GPTJAX_DATA_ROOT`` or ``../shared/data``) is absent.
"""

from __future__ import annotations

from collections import Counter

import pytest

from gptjax import paths
from gptjax.tasks import build_pools, get_task, sources

ROOT = paths.data_root()


def need(*parts: str):
    path = ROOT.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not found: {path}")
    return path


def test_sst2_counts():
    need("sst2")
    task = get_task("sst2")
    train = task.load("train")
    dev = task.load("validation")
    assert len(train) == 67_349 and len(dev) == 872
    assert Counter(r.label for r in train) == {1: 37_569, 0: 29_780}
    assert Counter(r.label for r in dev) == {1: 444, 0: 428}
    assert dev[0].fields["sentence"] == "one long string of cliches ."  # read by header `content`


def test_rte_counts():
    need("rte")
    task = get_task("rte")
    train, val = task.load("train"), task.load("validation")
    assert len(train) == 2_490 and len(val) == 277
    assert Counter(r.label for r in train) == {1: 1_249, 0: 1_241}  # 1 = entailment
    assert Counter(r.label for r in val) == {1: 146, 0: 131}
    assert train[0].fields["premise"] == "No Weapons of Mass Destruction Found in Iraq Yet."
    assert train[0].label == 0


def test_boolq_counts_and_single_split():
    need("boolq")
    task = get_task("boolq")
    dev = task.load("validation")
    assert len(dev) == 3_270
    assert Counter(r.label for r in dev) == {1: 2_033, 0: 1_237}
    if not (ROOT / "boolq" / "train.jsonl").exists():
        assert task.default_splits() == ("validation", "validation")
        pools = build_pools("boolq", pool_size=200, unseen_size=100, test_size=200, seed=0)
        ids = [e.source_id for e in pools.pool + pools.test]
        assert len(set(ids)) == 500 and all(i.startswith("boolq/validation:") for i in ids)


@pytest.mark.parametrize(
    "split,entries,lexes",
    [("train", 13_211, 35_426), ("dev", 1_667, 4_464), ("test", 1_779, 5_150)],
)
def test_webnlg_counts(split, entries, lexes):
    need("webnlg", "en", split)
    task = get_task("webnlg")
    files = task.local_files("validation" if split == "dev" else split)
    parsed = [e for f in files for e in sources.read_webnlg_xml(f)]
    assert len(parsed) == entries
    assert sum(len(e["lexes"]) for e in parsed) == lexes
    records = task.load("validation" if split == "dev" else split)
    assert len(records) == sum(1 for e in parsed if e["lexes"])
    assert sum(len(r.references) for r in records) == lexes
    if split == "test":
        assert max(len(r.references) for r in records) > 1  # several references per entry


def test_webnlg_test_file_without_refs_parses():
    path = need("webnlg", "en", "test", "rdf-to-text-generation-test-data-without-refs-en.xml")
    entries = sources.read_webnlg_xml(path)
    assert len(entries) == 1_779 and not any(e["lexes"] for e in entries)


MULTI30K = {
    "train": 29_000,
    "validation": 1_014,
    "test_2016_flickr": 1_000,
    "test_2017_flickr": 1_000,
    "test_2017_mscoco": 461,
    "test_2018_flickr": 1_071,
}


@pytest.mark.parametrize("split,rows", list(MULTI30K.items()))
def test_multi30k_counts(split, rows):
    need("wmt16_de_en", "multi30k")
    records = get_task("wmt16_de_en").load(split)
    assert len(records) == rows
    assert all(len(r.references) == 1 and r.fields["de"] for r in records)


def test_newstest2021_counts():
    folder = need("wmt16_de_en", "newstest2021")
    records = get_task("wmt16_de_en").load("newstest2021")
    assert len(records) == 1_000 and all(len(r.references) == 2 for r in records)
    assert records[0].fields["de"] == "Biker reagiert blitzschnell und verhindert Schlimmeres"
    # the English-original direction is not used by the task; check it parses too
    en_de = sources.read_parallel(
        [folder / "newstest2021.en-de.src.en", folder / "newstest2021.en-de.ref.A.de"]
    )
    assert len(en_de) == 1_002


@pytest.mark.parametrize("task", ["sst2", "rte", "boolq", "webnlg", "wmt16_de_en"])
def test_real_pools(task):
    need()
    kw = dict(pool_size=30, unseen_size=10, test_size=20, seed=5)
    a = build_pools(task, **kw)
    b = build_pools(task, **kw)
    assert a.pool == b.pool and a.test == b.test
    keys = [e.source_id for e in a.pool + a.test]
    assert len(set(keys)) == 60
    assert len({e.input for e in a.pool} & {e.input for e in a.test}) == 0
    inst = build_pools(task, fmt="instruction", label_noise=0.2, **kw)
    assert [e.source_id for e in inst.pool] == [e.source_id for e in a.pool]
    assert inst.flipped[:30].sum() == 6 and inst.flipped[30:].sum() == 2
    kind = get_task(task).kind
    for e in a.test:
        assert e.kind == kind
        if kind == "generation":
            assert e.references and e.target == " " + e.references[0]


def test_instruction_mixture_of_the_paper_tasks():
    need()
    mix = build_pools("mixture", pool_size=50, unseen_size=25, test_size=50, seed=0)
    assert Counter(mix.task_of_train[:50]) == {t: 10 for t in mix.meta["tasks"]}
    assert Counter(mix.task_of_test) == {t: 10 for t in mix.meta["tasks"]}
    assert mix.relatedness is None and mix.meta["fmt"] == "instruction"
