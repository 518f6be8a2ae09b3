"""source="tfds": the paper tasks read through ``tfds.data_source`` (no TensorFlow needed),
tested on ``tfds.testing.mock_data``."""

from __future__ import annotations

import sys

import pytest

from gptjax.tasks import build_pools, get_task, sources

tfds = pytest.importorskip("tensorflow_datasets")


@pytest.fixture
def mock_tfds():
    with tfds.testing.mock_data(num_examples=40):
        yield


@pytest.mark.parametrize("task", ["sst2", "rte", "boolq", "webnlg", "wmt16_de_en"])
def test_tfds_pools(task, mock_tfds):
    pools = build_pools(task, source="tfds", pool_size=8, unseen_size=4, test_size=6, seed=0)
    assert (len(pools.train), len(pools.unseen), len(pools.test)) == (8, 4, 6)
    ids = [e.source_id for e in pools.pool + pools.test]
    assert all(i.startswith(f"{task}/tfds-") for i in ids)
    assert len({e.input for e in pools.pool + pools.test}) == 18
    t = get_task(task)
    for e in pools.pool + pools.test:
        assert e.task == task and e.kind == t.kind
        if t.kind == "classification":
            assert e.target in t.label_words
        else:
            assert e.references and isinstance(e.references[0], str)
    inst = build_pools(
        task, source="tfds", fmt="instruction", pool_size=8, unseen_size=4, test_size=6, seed=0
    )
    assert [e.source_id for e in inst.pool] == ids[:12]
    assert "tensorflow" not in sys.modules  # tfds.data_source works without TensorFlow


def test_tfds_records_fields(mock_tfds):
    row = sources.tfds_records("wmt16_de_en", "validation")[0]
    assert set(row) == {"de", "en"}
    row = sources.tfds_records("webnlg", "train")[0]
    assert {"input", "target", "references"} <= set(row)


def test_tfds_unprepared_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"glue/sst2.*not prepared under .*array_record"):
        build_pools(
            "sst2",
            source="tfds",
            tfds_data_dir=tmp_path,
            pool_size=2,
            unseen_size=0,
            test_size=2,
            seed=0,
        )
