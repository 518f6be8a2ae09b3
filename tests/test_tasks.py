"""Tasks and data: pools, label noise, formats, the mixture, jsonl, bad input, tokenisation,
scoring.  Needs no data files (the demo tasks are generated in code); the Pythia tokenizer
is used where present, an in-memory BPE tokenizer otherwise."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from gptjax import paths
from gptjax.models.tokenizer import Tokenizer, load_tokenizer
from gptjax.tasks import (
    Example,
    bleu,
    build_pools,
    get_task,
    known_tasks,
    make_world,
    rouge_l,
    target_bucket,
    tokenize_examples,
)

SIZES = dict(pool_size=40, unseen_size=20, test_size=30)


@pytest.fixture(scope="module")
def small_tokenizer() -> Tokenizer:
    """A byte-level BPE tokenizer trained in memory on demo text (no files needed)."""
    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<|endoftext|>", "<|padding|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    pools = build_pools("mixture", tasks=("demo", "demo_gen"), seed=0, **SIZES)
    texts = [e.input + e.target for e in pools.pool + pools.test]
    backend.train_from_iterator(texts * 3, trainer)
    return Tokenizer(backend=backend, eos_id=0, pad_id=1)


@pytest.fixture(scope="module")
def pythia():
    path = paths.pythia_tokenizer()
    if not path.exists():
        pytest.skip(f"Pythia tokenizer not found at {path}")
    return load_tokenizer(path)


# ----------------------------------------------------------------------------- registry


def test_known_tasks_and_unknown_name():
    names = known_tasks()
    for name in (
        "sst2",
        "rte",
        "boolq",
        "webnlg",
        "wmt16_de_en",
        "demo",
        "demo_gen",
        "jsonl",
    ):
        assert name in names
        assert get_task(name).name == name
    assert "mixture" in names  # built by build_pools from its component tasks
    with pytest.raises(ValueError, match="not one task"):
        get_task("mixture")
    with pytest.raises(ValueError, match="cannot contain 'mixture'"):
        build_pools("mixture", tasks=("sst2", "mixture"), seed=0, **SIZES)
    with pytest.raises(ValueError, match="unknown task 'sst3'.*known tasks: .*sst2.*demo"):
        get_task("sst3")
    with pytest.raises(ValueError, match="known tasks"):
        build_pools("nope", seed=0, **SIZES)
    assert get_task("sst2").label_words == (" negative", " positive")
    assert get_task("rte").label_words == (" no", " yes")
    assert get_task("webnlg").kind == "generation" and get_task("webnlg").label_words == ()


# ----------------------------------------------------------------------------- pools


@pytest.mark.parametrize("task", ["demo", "demo_gen"])
def test_pools_sizes_disjoint_deterministic(task):
    a = build_pools(task, seed=3, **SIZES)
    b = build_pools(task, seed=3, **SIZES)
    c = build_pools(task, seed=4, **SIZES)
    assert (len(a.train), len(a.unseen), len(a.test)) == (40, 20, 30)
    assert len(a.flipped) == 60 and not a.flipped.any()
    assert a.task_of_train == [task] * 60 and a.task_of_test == [task] * 30
    ids = [e.source_id for e in a.pool + a.test]
    assert len(set(ids)) == len(ids), "pools and test set must be disjoint"
    inputs = [e.input for e in a.pool + a.test]
    assert len(set(inputs)) == len(inputs)
    assert a.train == b.train and a.unseen == b.unseen and a.test == b.test
    assert a.train != c.train
    kind = get_task(task).kind
    for e in a.pool + a.test:
        assert e.kind == kind and e.task == task
        assert not e.input.endswith(" ") and e.target.startswith(" ")
        if kind == "classification":
            assert e.target == get_task(task).label_words[e.label] and e.references == ()
        else:
            assert e.label is None and e.target == " " + e.references[0]


def test_demo_world_and_relatedness():
    world = make_world(0)
    assert len(set(world.words)) == 8 and world.answers.sum() == 4
    assert make_world(0).words == world.words and np.array_equal(
        make_world(0).answers, world.answers
    )
    assert make_world(1).words != world.words
    pools = build_pools("demo", seed=0, **SIZES)
    rel = pools.relatedness
    assert rel.shape == (60, 30) and rel.dtype == np.float32
    assert set(np.unique(rel)) <= {0.0, 1.0} and 0 < rel.mean() < 0.5
    w = pools.meta["worlds"]["demo"]
    word = lambda e: e.input.split("Is a ")[1].split()[0]  # noqa: E731
    for i in range(60):
        for n in range(30):
            assert rel[i, n] == float(word(pools.pool[i]) == word(pools.test[n]))
    # the label is the hidden property of the word asked about
    for e in pools.test:
        assert e.label == int(w.answers[w.words.index(word(e)), 0])
    gen = build_pools("demo_gen", seed=0, **SIZES)
    assert gen.relatedness is not None and gen.relatedness.shape == (60, 30)
    # same world from the same seed: a word's target is the same in every example
    targets = {}
    for e, g in zip(gen.pool, gen.meta["groups_train"], strict=True):
        assert targets.setdefault(g, e.target) == e.target


def test_paper_tasks_have_no_relatedness(tmp_path):
    path = tmp_path / "own.jsonl"
    path.write_text(
        "".join(json.dumps({"input": f"Q{i}:", "target": f" a{i}"}) + "\n" for i in range(30))
    )
    pools = build_pools("jsonl", source=str(path), pool_size=10, unseen_size=5, test_size=5, seed=0)
    assert pools.relatedness is None


@pytest.mark.parametrize("task", ["demo", "demo_gen"])
def test_label_noise_exact_and_recorded(task):
    clean = build_pools(task, seed=1, **SIZES)
    noisy = build_pools(task, seed=1, label_noise=0.25, **SIZES)
    assert noisy.flipped[:40].sum() == 10 and noisy.flipped[40:].sum() == 5
    assert [e.source_id for e in noisy.pool] == [e.source_id for e in clean.pool]
    assert noisy.test == clean.test
    for i, (a, b) in enumerate(zip(clean.pool, noisy.pool, strict=True)):
        assert a.input == b.input
        if noisy.flipped[i]:
            assert a.target != b.target
            if task == "demo":
                assert b.label == 1 - a.label and noisy.meta["original_labels"][i] == a.label
        else:
            assert a == b
    again = build_pools(task, seed=1, label_noise=0.25, **SIZES)
    assert np.array_equal(again.flipped, noisy.flipped)
    with pytest.raises(ValueError, match="label_noise"):
        build_pools(task, seed=1, label_noise=1.5, **SIZES)


def test_formats_and_encoder_text():
    fine = build_pools("demo", seed=0, **SIZES)
    inst = build_pools("demo", seed=0, fmt="instruction", **SIZES)
    assert [e.source_id for e in fine.pool] == [e.source_id for e in inst.pool]
    assert len(set(fine.meta["template_train"])) == 1
    assert len(set(inst.meta["template_train"])) == len(get_task("demo").instruction_templates)
    for task in ("sst2", "rte", "boolq", "webnlg", "wmt16_de_en"):
        assert len(get_task(task).templates("finetune")) == 1
        assert len(get_task(task).templates("instruction")) >= 3
    e = fine.train[0]
    assert e.encoder_text == e.input + e.target
    assert (
        build_pools("demo", seed=0, encoder_text="input", **SIZES).train[0].encoder_text == e.input
    )
    target_only = build_pools("demo", seed=0, encoder_text="target", **SIZES).train[0].encoder_text
    assert target_only == e.target.strip() and target_only in ("yes", "no")
    raw = build_pools("demo", seed=0, encoder_text="raw", **SIZES).train[0].encoder_text
    assert "Question" not in raw
    with pytest.raises(ValueError, match="encoder_text"):
        build_pools("demo", seed=0, encoder_text="bogus", **SIZES)
    with pytest.raises(ValueError, match="format"):
        build_pools("demo", seed=0, fmt="chat", **SIZES)


def test_mixture_one_id_space():
    mix = build_pools("mixture", tasks=("demo", "demo_gen"), seed=0, label_noise=0.1, **SIZES)
    assert mix.meta["fmt"] == "instruction"
    assert len(mix.train) == 40 and len(mix.test) == 30
    assert mix.task_of_train.count("demo") == 30 and mix.task_of_train.count("demo_gen") == 30
    assert mix.task_of_train[:40].count("demo") == 20
    assert mix.task_of_test.count("demo") == 15
    assert [e.task for e in mix.pool] == mix.task_of_train
    assert (
        mix.task_of_train[:10] != sorted(mix.task_of_train[:10])
        or len(set(mix.task_of_train[:10])) > 1
    )
    assert mix.flipped[:40].sum() == 4 and mix.flipped[40:].sum() == 2
    rel = mix.relatedness
    tr, te = np.array(mix.task_of_train), np.array(mix.task_of_test)
    assert rel[tr[:, None] != te[None, :]].sum() == 0  # no relatedness across tasks
    assert rel.sum() > 0
    again = build_pools("mixture", tasks=("demo", "demo_gen"), seed=0, label_noise=0.1, **SIZES)
    assert again.pool == mix.pool and again.test == mix.test
    # per-task keywords
    small = build_pools("mixture", tasks=("demo", "demo_gen"), seed=0, demo={"n_words": 4}, **SIZES)
    assert len(small.meta["worlds"]["demo"].words) == 4
    with pytest.raises(ValueError, match="known tasks"):
        build_pools("mixture", tasks=("demo", "sst5"), seed=0, **SIZES)


# ----------------------------------------------------------------------------- jsonl


def test_jsonl_task(tmp_path):
    path = tmp_path / "own.jsonl"
    rows = [
        {"input": f"Item {i}. Is it even?\nAnswer:", "target": " yes" if i % 2 == 0 else " no"}
        for i in range(40)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    gen = build_pools("jsonl", source=str(path), pool_size=20, unseen_size=5, test_size=10, seed=0)
    assert gen.train[0].kind == "generation" and gen.train[0].references
    assert {e.input for e in gen.pool} & {e.input for e in gen.test} == set()
    cls = build_pools(
        "jsonl",
        path=path,
        label_words=(" no", " yes"),
        pool_size=20,
        unseen_size=5,
        test_size=10,
        seed=0,
    )
    for e in cls.pool + cls.test:
        item = int(e.input.split()[1].rstrip("."))
        assert e.label == int(item % 2 == 0) and e.target == (" yes" if e.label else " no")
    test_path = tmp_path / "test.jsonl"
    test_path.write_text(
        json.dumps({"input": "Item 99.", "target": " no", "references": ["no", "nope"]}) + "\n"
    )
    split = build_pools(
        "jsonl", path=path, test_path=test_path, pool_size=30, unseen_size=10, test_size=1, seed=0
    )
    assert split.test[0].references == ("no", "nope")
    with pytest.raises(ValueError, match=r"\(40 rows\) has only 30 left"):
        build_pools("jsonl", source=str(path), pool_size=40, unseen_size=5, test_size=10, seed=0)


# ----------------------------------------------------------------------------- bad input


def test_missing_files_name_path_and_format(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"sst2/dev\.tsv.*TSV with a header"):
        build_pools("sst2", data_root=tmp_path, seed=0, **SIZES)
    with pytest.raises(FileNotFoundError, match=r"rte/val\.jsonl.*JSON Lines"):
        build_pools("rte", data_root=tmp_path, seed=0, **SIZES)
    with pytest.raises(FileNotFoundError, match=r"boolq/dev\.jsonl.*BoolQ JSON Lines"):
        build_pools("boolq", data_root=tmp_path, seed=0, **SIZES)
    with pytest.raises(FileNotFoundError, match=r"webnlg/en/test/rdf-to-text.*WebNLG 3\.0 XML"):
        build_pools("webnlg", data_root=tmp_path, seed=0, **SIZES)
    with pytest.raises(
        FileNotFoundError, match=r"wmt16_de_en/multi30k/test_2016_flickr\.de.*line-aligned"
    ):
        build_pools("wmt16_de_en", data_root=tmp_path, seed=0, **SIZES)
    with pytest.raises(FileNotFoundError, match=r"nothere\.jsonl.*\{\"input\": str"):
        build_pools("jsonl", source=str(tmp_path / "nothere.jsonl"), seed=0, **SIZES)


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_malformed_rows_name_file_and_line(tmp_path):
    tsv = _write(tmp_path / "sst2" / "train.tsv", "label\tsentence\n1\tgood film\n0\tbad\textra\n")
    _write(tmp_path / "sst2" / "dev.tsv", "label\tcontent\n1\tfine\n")
    with pytest.raises(ValueError, match=rf"{tsv}, line 3: expected 2 tab-separated fields"):
        get_task("sst2").load("train", data_root=tmp_path)
    _write(tsv, "label\tsentence\n1\tgood film\n7\tbad\n")
    with pytest.raises(ValueError, match=rf"{tsv}, line 3: label '7'"):
        get_task("sst2").load("train", data_root=tmp_path)
    _write(tsv, "sentence\tscore\ngood\t1\n")
    with pytest.raises(ValueError, match=rf"{tsv}, line 1: header .* no column named 'label'"):
        get_task("sst2").load("train", data_root=tmp_path)
    # dev.tsv's header is label<TAB>content: read by name, in either column order
    _write(tsv, "sentence\tlabel\ngood film\t1\n")
    assert get_task("sst2").load("train", data_root=tmp_path)[0].fields["sentence"] == "good film"
    assert get_task("sst2").load("validation", data_root=tmp_path)[0].fields["sentence"] == "fine"

    rte = _write(
        tmp_path / "rte" / "train.jsonl",
        '{"premise": "a", "hypothesis": "b", "label": "entailment", "idx": 0}\n'
        '{"premise": "a", "hyp',
    )
    with pytest.raises(ValueError, match=rf"{rte}, line 2: not valid JSON"):
        get_task("rte").load("train", data_root=tmp_path)
    _write(rte, '{"premise": "a", "hypothesis": "b", "label": "maybe"}\n')
    with pytest.raises(ValueError, match=rf"{rte}, line 1: label 'maybe'"):
        get_task("rte").load("train", data_root=tmp_path)
    boolq = _write(
        tmp_path / "boolq" / "dev.jsonl", '{"question": "q", "passage": "p", "title": "t"}\n'
    )
    with pytest.raises(ValueError, match=rf"{boolq}, line 1: missing field 'answer'"):
        get_task("boolq").load("validation", data_root=tmp_path)

    xml = _write(
        tmp_path / "webnlg" / "en" / "dev" / "1triples" / "A.xml",
        "<benchmark><entries>\n<entry eid='Id1'>\n<modifiedtripleset>\n"
        "<mtriple>A | b | C</mtriple>\n</modifiedtripleset>\n<lex>A b C.</lex>\n</entry>\n"
        "<entry eid='Id2'>\n<modifiedtripleset>\n<mtriple>no separators</mtriple>\n",
    )
    with pytest.raises(ValueError, match=rf"{xml}, line 10: triple 'no separators'"):
        get_task("webnlg").load("validation", data_root=tmp_path)
    _write(
        xml,
        "<benchmark><entries>\n<entry eid='Id1'>\n<lex>text</lex>\n</entry>"
        "</entries></benchmark>\n",
    )
    with pytest.raises(ValueError, match=rf"{xml}, line 2: entry Id1 has no <mtriple>"):
        get_task("webnlg").load("validation", data_root=tmp_path)
    _write(xml, "<benchmark><entries>\n<entry eid='Id1'>\n</entries>\n")
    with pytest.raises(ValueError, match=rf"{xml}, line 3: malformed XML"):
        get_task("webnlg").load("validation", data_root=tmp_path)

    de = _write(tmp_path / "wmt16_de_en" / "multi30k" / "val.de", "eins\nzwei\ndrei\n")
    _write(tmp_path / "wmt16_de_en" / "multi30k" / "val.en", "one\ntwo\n")
    with pytest.raises(ValueError, match=r"val\.en, line 3: file ends here"):
        get_task("wmt16_de_en").load("validation", data_root=tmp_path)
    _write(tmp_path / "wmt16_de_en" / "multi30k" / "val.en", "one\n\nthree\n")
    with pytest.raises(ValueError, match=r"val\.en, line 2: empty segment"):
        get_task("wmt16_de_en").load("validation", data_root=tmp_path)
    assert de.exists()

    own = _write(tmp_path / "own.jsonl", '{"input": "x", "target": "y"}\n["not", "an", "object"]\n')
    with pytest.raises(ValueError, match=rf"{own}, line 2: expected a JSON object"):
        build_pools("jsonl", source=str(own), seed=0, pool_size=1, unseen_size=0, test_size=0)
    _write(own, '{"input": "x", "target": "maybe"}\n')
    with pytest.raises(
        ValueError, match=rf"{own}, line 1: target 'maybe' is not one of the label words"
    ):
        get_task("jsonl", path=own, label_words=(" no", " yes")).load("train")


def test_data_root_from_environment(tmp_path, monkeypatch):
    _write(
        tmp_path / "sst2" / "train.tsv",
        "label\tsentence\n" + "".join(f"{i % 2}\ts{i}\n" for i in range(20)),
    )
    _write(
        tmp_path / "sst2" / "dev.tsv",
        "label\tcontent\n" + "".join(f"{i % 2}\td{i}\n" for i in range(10)),
    )
    monkeypatch.setenv(paths.DATA_ROOT_ENV, str(tmp_path))
    pools = build_pools("sst2", pool_size=10, unseen_size=5, test_size=5, seed=0)
    assert {e.input.split("\n")[0] for e in pools.test} <= {f"Sentence: d{i}" for i in range(10)}
    assert paths.data_root() == tmp_path


# ----------------------------------------------------------------------------- tokenisation


def _check_tokenized(examples, batch, tokenizer):
    m = len(examples)
    assert batch.input_ids.shape[0] == m and batch.input_ids.dtype == np.int32
    assert batch.target_mask.dtype == np.float32
    for i, e in enumerate(examples):
        mask = batch.target_mask[i] > 0
        ids = batch.target_ids[i][mask]
        assert np.array_equal(batch.input_ids[i, batch.target_pos[i][mask] + 1], ids)
        gen = e.label is None
        assert (ids[-1] == tokenizer.eos_id) == gen
        assert tokenizer.decode(ids[:-1] if gen else ids) == e.target
        n = int(batch.attention_mask[i].sum())
        assert batch.attention_mask[i, :n].all() and not batch.attention_mask[i, n:].any()
        assert np.all(batch.input_ids[i, n:] == tokenizer.pad_id)
        assert batch.target_pos[i][mask][-1] == n - 2  # the target ends the sequence
        p = batch.prompt_ids[i][batch.prompt_mask[i] > 0]
        assert np.array_equal(p, batch.input_ids[i, : len(p)])
        assert batch.prompt_mask[i, -1] == 1  # left padded
        assert not batch.target_pos[i][~mask].any() and not batch.target_ids[i][~mask].any()


@pytest.mark.parametrize("task", ["demo", "demo_gen"])
def test_tokenize_invariants(task, small_tokenizer):
    pools = build_pools(task, seed=0, **SIZES)
    batch = tokenize_examples(pools.train, small_tokenizer, max_len=128)
    assert batch.input_ids.shape[1] % 16 == 0 and batch.prompt_ids.shape[1] % 16 == 0
    assert batch.target_ids.shape[1] == target_bucket(int(batch.target_len.max()), 16)
    _check_tokenized(pools.train, batch, small_tokenizer)
    assert not batch.truncated.any()
    sub = batch.take([3, 1])
    assert sub.input_ids.shape == (2, batch.input_ids.shape[1])
    assert np.array_equal(sub.input_ids[0], batch.input_ids[3])
    fixed = tokenize_examples(
        pools.test, small_tokenizer, max_len=96, max_target_len=16, pad_to_max=True
    )
    assert fixed.input_ids.shape == (30, 96) and fixed.prompt_ids.shape == (30, 96)
    assert fixed.target_ids.shape == (30, 16)
    _check_tokenized(pools.test, fixed, small_tokenizer)


def test_truncation_keeps_the_target(small_tokenizer):
    long_prompt = (
        "Passage: " + " ".join(f"word{i}" for i in range(200)) + "\nQuestion: is it?\nAnswer:"
    )
    examples = [
        Example(long_prompt, " yes", "demo", 1, (), ""),
        Example("Short:", " It lives in the cave and eats honey.", "demo_gen", None, ("x",), ""),
        Example(long_prompt, " It lives in the cave and eats honey.", "demo_gen", None, ("x",), ""),
    ]
    for how in ("middle", "left"):
        batch = tokenize_examples(examples, small_tokenizer, max_len=48, truncation=how)
        assert batch.input_ids.shape[1] == 48
        assert list(batch.truncated) == [True, False, True]
        _check_tokenized(examples, batch, small_tokenizer)
        prompt = small_tokenizer.decode(batch.prompt_ids[0][batch.prompt_mask[0] > 0])
        assert prompt.endswith("Answer:")
        assert prompt.startswith("Passage") == (how == "middle")
    cut = tokenize_examples(examples, small_tokenizer, max_len=48, max_target_len=4)
    assert cut.target_truncated.tolist() == [False, True, True] and cut.target_len.max() == 4
    assert cut.target_ids[1, 3] == small_tokenizer.eos_id
    with pytest.raises(ValueError, match="target has .* tokens"):
        tokenize_examples(examples, small_tokenizer, max_len=6)
    no_eos = tokenize_examples(examples[1:2], small_tokenizer, max_len=48, eos_after_target=False)
    assert no_eos.target_ids[0][no_eos.target_mask[0] > 0][-1] != small_tokenizer.eos_id


def test_target_bucket():
    assert [target_bucket(n, 16) for n in (0, 1, 2, 3, 5, 16, 17, 40)] == [
        1,
        1,
        2,
        4,
        8,
        16,
        32,
        48,
    ]


def test_pythia_label_words_single_tokens(pythia):
    for task in ("sst2", "rte", "boolq", "demo"):
        for word in get_task(task).label_words:
            assert len(pythia.encode(word)) == 1, (task, word)
    pools = build_pools("mixture", tasks=("demo", "demo_gen"), seed=0, **SIZES)
    batch = tokenize_examples(pools.pool, pythia, max_len=64)
    _check_tokenized(pools.pool, batch, pythia)
    assert batch.input_ids.shape[1] <= 64
    demo_only = tokenize_examples([e for e in pools.pool if e.task == "demo"], pythia, max_len=64)
    assert demo_only.target_ids.shape[1] == 1


# ----------------------------------------------------------------------------- scoring


def test_scoring():
    hyps = ["the cat sat on the mat", "a dog", "", "It lives in the cave and eats honey."]
    refs = [
        ["the cat sat on the mat"],
        ["the cat sat"],
        ["anything"],
        ["x", "It lives in the cave and eats honey."],
    ]
    b = bleu(hyps, refs)
    r = rouge_l(hyps, refs)
    assert b.shape == (4,) and r.shape == (4,)
    assert b[0] == pytest.approx(100.0) and b[3] == pytest.approx(100.0)
    assert b[2] == 0.0 and 0.0 <= b[1] < 100.0
    assert r[0] == pytest.approx(1.0) and r[3] == pytest.approx(1.0) and r[2] == 0.0
    assert 0.0 < rouge_l(["the cat"], [["the cat sat"]])[0] < 1.0
    with pytest.raises(ValueError, match="2 hypotheses but 1"):
        bleu(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="non-empty"):
        rouge_l(["a"], [[]])
