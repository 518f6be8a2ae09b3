"""Preparation shared by every stage: the config checked against the workdir, the pools, the
tokenised data and the base model (built, optionally pretrained, saved once, always restored
from the saved copy so every process and every resumed invocation starts from the same one).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jax
import ml_collections
import numpy as np

from gptjax import io, paths
from gptjax.collect.pretrain import pretrain_base
from gptjax.models import load_model
from gptjax.models.checkpoint import restore_model, save_model
from gptjax.models.config import ModelConfig
from gptjax.models.tokenizer import CompactTokenizer, load_tokenizer
from gptjax.models.transformer import Transformer, init_model
from gptjax.pipeline import config as config_lib
from gptjax.pipeline.wait import wait_until
from gptjax.pipeline.workdir import Workdir
from gptjax.tasks import Example, Pools, build_pools, tokenize_examples
from gptjax.tasks.tokenize import TokenizedExamples

# Config sections whose change invalidates collected runs, and keys inside them that do not.
_COLLECTION_KEYS = ("seed", "data", "model", "collect")
# The split says only which runs fit which method. How many runs or decodes share a device
# changes no number (tests hold both to the one-by-one computation), so a resumed collection
# may change them, e.g. after running out of memory.
_NOT_AFFECTING_RUNS = {"collect.split", "collect.runs_per_device", "collect.generation_chunk"}
# Collection keys added after workdirs were made by earlier versions: left out of the
# comparison and of the runs' fingerprint while they hold their default (what those versions
# did), so such workdirs still resume. Without this, adding a key refuses every workdir.
_ADDED_LATER = ("collect.eval_buckets", "collect.save_params_runs")
# The keys of _ADDED_LATER that the version before that rule had, and fingerprinted runs with.
_FINGERPRINTED_BEFORE_THE_RULE = ("collect.eval_buckets",)


@dataclasses.dataclass
class Prepared:
    pools: Pools
    tokenizer: Any
    pool_tokens: TokenizedExamples  # training pool then unseen pool (index = pool id)
    test_tokens: TokenizedExamples
    model: Transformer
    # What the runs depend on (the collection config and the pools' contents); recorded in
    # every run's meta and checked when runs are read.
    fingerprint: str = ""
    # Fingerprints earlier versions recorded for the same collection (see _ADDED_LATER).
    older_fingerprints: tuple[str, ...] = ()

    @property
    def run_expect(self) -> dict[str, tuple[str, ...]]:
        """``expect`` for `RunStore.read` / `load`: this collection's runs, whichever version
        wrote them."""
        return {"config_fingerprint": (self.fingerprint, *self.older_fingerprints)}


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _collection_settings(config: dict, keep: tuple[str, ...] = ()) -> dict[str, Any]:
    """The settings the runs depend on; keys of `_ADDED_LATER` at their default are left out,
    except those in ``keep``."""
    flat = _flat({k: config.get(k) for k in _COLLECTION_KEYS})
    defaults = _flat(config_lib.base_config().to_dict())
    return {
        k: v
        for k, v in flat.items()
        if k not in _NOT_AFFECTING_RUNS and (k in keep or k not in _ADDED_LATER or v != defaults[k])
    }


def _runs_fingerprint(settings: dict[str, Any], pools_record: dict[str, Any]) -> str:
    text = json.dumps([settings, pools_record], sort_keys=True).encode()
    return io.fingerprint(np.frombuffer(text, np.uint8))


def runs_fingerprints(config: dict, pools_record: dict[str, Any]) -> tuple[str, ...]:
    """(the fingerprint runs of this collection record, then the one a version that already had
    collect.eval_buckets but not yet the `_ADDED_LATER` rule recorded: with that key at its
    default included, and no later key; workdirs collected by it resume too)."""
    current = _runs_fingerprint(_collection_settings(config), pools_record)
    older_settings = _collection_settings(config, keep=_FINGERPRINTED_BEFORE_THE_RULE)
    older = _runs_fingerprint(older_settings, pools_record)
    return (current,) if older == current else (current, older)


def check_workdir_config(config: ml_collections.ConfigDict, workdir: Workdir) -> None:
    """Refuse to mix runs of different configs in one workdir."""
    path = workdir.config_file
    if not path.is_file():
        return
    saved = io.read_json(path)
    current = io.json_safe(config.to_dict())  # as config.json holds it (tuples as lists)
    a, b = _collection_settings(saved), _collection_settings(current)
    differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if differ:
        raise ValueError(
            f"workdir {workdir.root} holds runs collected with another config (differs at "
            f"{', '.join(differ[:5])}); use a new --workdir or restore those values"
        )


def load_base_model(
    config: ml_collections.ConfigDict, pools: Pools | None = None
) -> tuple[Transformer, Any]:
    """(model, tokenizer) as the config's model section describes (before any pretraining)."""
    m = config.model
    if m.source != "init":
        if m.compact_vocab:
            raise ValueError("config key 'model.compact_vocab' applies to source 'init' only")
        return load_model(m.source, m.path, tokenizer=m.tokenizer or None)
    tokenizer = load_tokenizer(m.tokenizer or paths.pythia_tokenizer())
    vocab_size = m.vocab_size
    if m.compact_vocab:
        if pools is None:
            raise ValueError("a compact vocabulary is built from the pools: pass them")
        texts = [t for e in pools.pool + pools.test for t in (e.input, e.target, *e.references)]
        tokenizer = CompactTokenizer.from_texts(tokenizer, texts)
        vocab_size = -(-tokenizer.vocab_size // 64) * 64  # round up, as Pythia pads its vocab
    elif tokenizer.vocab_size > vocab_size:
        raise ValueError(
            f"config key 'model.vocab_size' ({vocab_size}) is smaller than the "
            f"tokenizer's vocabulary ({tokenizer.vocab_size})"
        )
    cfg = ModelConfig(
        arch=m.arch,
        vocab_size=vocab_size,
        hidden_size=m.hidden_size,
        num_layers=m.num_layers,
        num_heads=m.num_heads,
        intermediate_size=m.intermediate_size,
        rotary_pct=m.rotary_pct,
        parallel_residual=m.arch == "gpt_neox",
        attention_bias=m.arch == "gpt_neox",
        mlp_bias=m.arch == "gpt_neox",
        max_position_embeddings=max(2048, config.data.max_len),
        eos_token_id=tokenizer.eos_id,
    )
    return init_model(cfg, seed=m.init_seed), tokenizer


def build_config_pools(config: ml_collections.ConfigDict, **overrides: Any) -> Pools:
    d = config.data
    mixture = tuple(config_lib.names_in(d.mixture_tasks)) or None
    source, task_kwargs = d.source, d.task_kwargs.to_dict()
    if d.task == "jsonl" and source not in config_lib.DATA_SOURCES:
        # data.source as the JSONL file: the older spelling of data.task_kwargs.path.
        task_kwargs.setdefault("path", source)
        source = "local"
    kwargs = dict(
        pool_size=d.pool_size,
        unseen_size=d.unseen_size,
        test_size=d.test_size,
        seed=config.seed,
        fmt=d.format,
        label_noise=d.label_noise,
        data_root=d.data_root or None,
        source=source,
        encoder_text=d.encoder_text,
        tasks=mixture,
    )
    return build_pools(d.task, **(kwargs | task_kwargs | overrides))


def _text(example: Example) -> str:
    """What a language model trains on: prompt then target."""
    return example.input + example.target


def drop_overlap(examples: list[Example], pools: Pools) -> tuple[list[Example], int]:
    """``examples`` without those whose text (input + target) is also a pool, unseen or test
    example's, and how many were dropped."""
    seen = {_text(e) for e in pools.pool + pools.test}
    kept = [e for e in examples if _text(e) not in seen]
    return kept, len(examples) - len(kept)


def unknown_tokens(examples: list[Example], tokenizer: CompactTokenizer) -> tuple[int, int]:
    """(tokens outside the compact vocabulary, all tokens) of the prompts and targets, encoded
    as `tokenize_examples` encodes them (prompt and target apart)."""
    known = set(tokenizer.base_ids)
    texts = [t for e in examples for t in (e.input, e.target)]
    encoded = tokenizer.base.encode_batch(texts)
    unknown = sum(1 for ids in encoded for i in ids if i not in known)
    return unknown, sum(len(ids) for ids in encoded)


def pretraining_examples(config: ml_collections.ConfigDict, pools: Pools) -> list[Example]:
    """Examples of the same task built with ``model.pretrain_task_kwargs``, disjoint from the
    pools and the test set by construction (examples with the same text are dropped)."""
    m = config.model
    try:
        pretrain = build_config_pools(
            config,
            pool_size=m.pretrain_examples,
            unseen_size=0,
            test_size=1,
            seed=config.seed + 1,
            label_noise=0.0,
            encoder_text="input_target",
            tasks=None,
            **m.pretrain_task_kwargs.to_dict(),
        )
    except ValueError as err:
        raise ValueError(
            f"pretraining data (model.pretrain_examples = {m.pretrain_examples}, "
            f"model.pretrain_task_kwargs = {m.pretrain_task_kwargs.to_dict()}): {err}"
        ) from None
    examples, dropped = drop_overlap(pretrain.pool, pools)
    print(
        f"pretraining data: {len(pretrain.pool)} examples, {dropped} dropped (same text as a "
        f"pool, unseen or test example), {len(examples)} left"
    )
    if len(examples) < m.pretrain_batch_size:
        raise ValueError(
            f"only {len(examples)} pretraining examples are left after dropping {dropped} that "
            f"are also pool, unseen or test examples: fewer than model.pretrain_batch_size "
            f"({m.pretrain_batch_size}); pretrain on other examples (for task jsonl: "
            "model.pretrain_task_kwargs.path, a separate file) or lower model.pretrain_batch_size"
        )
    return examples


def _pretrain(
    config: ml_collections.ConfigDict, model: Transformer, tokenizer, pools: Pools
) -> Transformer:
    """Train a fresh base model on examples of the same task built with
    ``model.pretrain_task_kwargs`` (the demo: another world, sharing no facts with the pools),
    none of which has the text of a pool, unseen or test example."""
    examples = pretraining_examples(config, pools)
    if isinstance(tokenizer, CompactTokenizer):
        unknown, total = unknown_tokens(examples, tokenizer)
        if unknown:
            print(
                f"warning: {unknown} of {total} pretraining tokens ({unknown / max(total, 1):.1%})"
                " are outside the compact vocabulary, which model.compact_vocab builds from the "
                "pool and test texts only; the model sees them as one unknown token"
            )
    tokens = tokenize_examples(examples, tokenizer, max_len=config.data.max_len)
    model, loss = pretrain_base(
        model,
        tokens.loss_inputs(),
        steps=config.model.pretrain_steps,
        batch_size=config.model.pretrain_batch_size,
        learning_rate=config.model.pretrain_lr,
        seed=config.seed,
        progress=config.progress,
    )
    print(f"pretrained the base model: {config.model.pretrain_steps} steps, loss {loss:.4f}")
    return model


def prepare(config: ml_collections.ConfigDict, workdir: Workdir) -> Prepared:
    """Check the config (against the workdir's too), build pools, tokens and the base model.
    ``config.json`` is written only once all of it succeeded."""
    config_lib.validate(config)
    check_workdir_config(config, workdir)
    pools = build_config_pools(config)
    model, tokenizer = load_base_model(config, pools)
    if config.data.chat_template:
        pools = with_chat_template(pools, tokenizer)
    pools_record = _pools_record(pools)
    _check_same_data(workdir, pools_record, config.data.data_root)
    primary = jax.process_index() == 0  # with several processes, one writes shared files
    model_done = workdir.model_dir / "config.json"  # written last by save_model
    if not model_done.is_file():
        if primary:
            if config.model.pretrain_steps:
                model = _pretrain(config, model, tokenizer, pools)
            save_model(model, workdir.model_dir)
        else:
            wait_until(model_done.is_file, f"{model_done} to appear")
    model = restore_model(workdir.model_dir)
    max_len = config.data.max_len
    fingerprints = runs_fingerprints(config.to_dict(), pools_record)
    prep = Prepared(
        pools=pools,
        tokenizer=tokenizer,
        pool_tokens=tokenize_examples(pools.pool, tokenizer, max_len=max_len),
        test_tokens=tokenize_examples(pools.test, tokenizer, max_len=max_len),
        model=model,
        fingerprint=fingerprints[0],
        older_fingerprints=fingerprints[1:],
    )
    if primary:
        # The data's identity beside the config: where it was read from, and a fingerprint
        # of the pools it gave (runs record the same fingerprint; see `_check_same_data`).
        resolved = {
            "data_root": str(paths.data_root(config.data.data_root or None).absolute()),
            "data_fingerprint": io.fingerprint(
                np.frombuffer(json.dumps(pools_record, sort_keys=True).encode(), np.uint8)
            ),
        }
        io.atomic_write_json(workdir.config_file, config.to_dict() | {"resolved": resolved})
        _write_pools(workdir, pools, pools_record)
    return prep


def with_chat_template(pools: Pools, tokenizer: Any) -> Pools:
    """The pools with every prompt wrapped in the tokenizer's own chat template: the prompt as
    a user turn, then the assistant's turn opened (``add_generation_prompt=True``), as an
    instruct model saw its fine-tuning data. Targets and encoder texts are unchanged."""
    apply = getattr(tokenizer, "apply_chat_template", None)
    if not callable(apply) or not getattr(tokenizer, "chat_template", True):
        raise ValueError(
            "config key 'data.chat_template' is true, but the tokenizer "
            f"({type(tokenizer).__name__}) has no chat template; set data.chat_template = "
            "False, or use a model whose tokenizer has one (model.source gguf, e.g. "
            "SmolLM2-Instruct, with model.tokenizer unset)"
        )

    def wrap(examples: list[Example]) -> list[Example]:
        return [
            dataclasses.replace(
                e,
                input=apply([{"role": "user", "content": e.input}], add_generation_prompt=True),
            )
            for e in examples
        ]

    return dataclasses.replace(
        pools, train=wrap(pools.train), unseen=wrap(pools.unseen), test=wrap(pools.test)
    )


def _pools_record(pools: Pools) -> dict[str, Any]:
    """The pools as ``data/pools.json`` holds them (JSON types)."""

    def rows(examples):
        return [dataclasses.asdict(e) for e in examples]

    record = {
        "train": rows(pools.train),
        "unseen": rows(pools.unseen),
        "test": rows(pools.test),
        "flipped": np.asarray(pools.flipped).astype(bool).tolist(),
        "task_of_train": list(pools.task_of_train),
        "task_of_test": list(pools.task_of_test),
    }
    return json.loads(json.dumps(io.json_safe(record)))


def _check_same_data(workdir: Workdir, record: dict[str, Any], data_root: str) -> None:
    """Refuse data that differs from what the workdir's runs were collected on (another
    data root, edited files): the pools are the data's identity."""
    path = workdir.pools_file
    if path.is_file() and io.read_json(path) != record:
        before = "?"
        if workdir.config_file.is_file():
            before = io.read_json(workdir.config_file).get("resolved", {}).get("data_root", "?")
        raise ValueError(
            f"the data differs from what workdir {workdir.root} was collected on ({path} "
            f"holds other examples or labels; data root then {before}, now "
            f"{paths.data_root(data_root or None).absolute()}); use a new --workdir or point "
            "GPTJAX_DATA_ROOT / data.data_root back at the original"
        )


def _write_pools(workdir: Workdir, pools: Pools, record: dict[str, Any]) -> None:
    io.atomic_write_json(workdir.pools_file, record)
    if pools.relatedness is not None:
        io.atomic_save_npy(workdir.relatedness_file, np.asarray(pools.relatedness, np.float32))
