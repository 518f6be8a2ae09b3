"""The experiment config: one schema with defaults, that every configs/*.py starts from.

A config file's ``get_config()`` calls `base_config()` and overrides fields; `validate`
rejects unknown keys, wrong types and impossible values, naming the key, before any work
starts (absl + ml_collections.config_flags turn ``--config.a.b=v`` into overrides).
"""

from __future__ import annotations

import math
from typing import Any

import ml_collections

STAGES = ("collect", "simulate", "baselines", "report")
MODEL_SOURCES = ("init", "hf", "gguf", "gptjax")


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.stages = "collect,simulate,baselines,report"  # comma-separated subset of STAGES

    c.data = ml_collections.ConfigDict()
    c.data.task = "demo"
    c.data.format = "finetune"  # finetune | instruction
    c.data.mixture_tasks = ""  # comma-separated components when task == "mixture"
    c.data.source = "local"  # local | tfds | a JSONL path for task "jsonl"
    c.data.data_root = ""  # "" -> $GPTJAX_DATA_ROOT or ../shared/data
    c.data.pool_size = 200
    c.data.unseen_size = 0
    c.data.test_size = 200
    c.data.label_noise = 0.0
    c.data.encoder_text = "input_target"
    c.data.max_len = 256
    c.data.task_kwargs = ml_collections.ConfigDict()

    c.model = ml_collections.ConfigDict()
    c.model.source = "init"  # init (fresh, from the fields below) | hf | gguf | gptjax
    c.model.path = ""  # HF dir, GGUF file or gptjax model dir
    c.model.tokenizer = ""  # tokenizer.json or dir; "" -> Pythia tokenizer (or the GGUF's)
    c.model.arch = "gpt_neox"
    c.model.vocab_size = 50304
    # Restrict the tokenizer to the tokens the task's texts use (fresh "init" models only):
    # a tiny demo model then needs no 50k-row embedding. vocab_size is then derived.
    c.model.compact_vocab = False
    c.model.hidden_size = 64
    c.model.num_layers = 2
    c.model.num_heads = 4
    c.model.intermediate_size = 256
    c.model.rotary_pct = 0.25
    c.model.init_seed = 0
    # Fresh models only: first train this many steps on examples of the same task built with
    # pretrain_task_kwargs (the demo: another world, so no facts are shared with the pools).
    c.model.pretrain_steps = 0
    c.model.pretrain_examples = 256
    c.model.pretrain_batch_size = 16
    c.model.pretrain_lr = 3e-3
    c.model.pretrain_task_kwargs = ml_collections.ConfigDict()

    c.collect = ml_collections.ConfigDict()
    c.collect.num_runs = 32
    c.collect.subset_size = 128
    c.collect.batch_size = 4
    c.collect.epochs = 3
    c.collect.learning_rate = 1e-5
    c.collect.warmup_steps = 0
    c.collect.end_lr_factor = 0.0
    c.collect.b1 = 0.9
    c.collect.b2 = 0.999
    c.collect.eps = 1e-8
    c.collect.weight_decay = 0.001
    c.collect.eval_chunk = 64
    c.collect.runs_per_device = 4
    c.collect.save_params = "none"  # none | all | every:m | evenly:k | comma-separated steps
    c.collect.save_params_regex = ""  # save only matching parameter paths ("" = all)
    c.collect.unseen_runs = 0
    c.collect.generation_every = 0  # BLEU/ROUGE-L of greedy generations every m steps (0: off)
    c.collect.max_new_tokens = 32
    c.collect.sampling_temperature = 0.0  # 0: greedy (the default: sampled metrics are noisy)
    c.collect.top_p = 1.0
    c.collect.split = "25,2,5"  # train, validation, test runs (the rest are unused)
    c.collect.progress = True

    from baselines.stage import default_config as baselines_defaults
    from simulator.stage import default_config as simulator_defaults

    c.simulator = simulator_defaults()
    c.baselines = baselines_defaults()
    return c


def _schema_errors(config: Any, schema: Any, prefix: str = "") -> list[str]:
    errors = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        if key not in schema:
            errors.append(f"unknown config key {name!r}")
            continue
        expected = schema[key]
        if isinstance(expected, ml_collections.ConfigDict):
            if name in ("data.task_kwargs", "model.pretrain_task_kwargs"):
                continue  # free-form, passed to the task
            if not isinstance(value, ml_collections.ConfigDict | dict):
                errors.append(f"config key {name!r} must be a section, got {value!r}")
            else:
                errors.extend(_schema_errors(value, expected, name + "."))
        elif isinstance(expected, bool):
            if not isinstance(value, bool):
                errors.append(f"config key {name!r} must be true/false, got {value!r}")
        elif isinstance(expected, int | float) and not isinstance(expected, bool):
            if isinstance(value, bool) or not isinstance(value, int | float):
                errors.append(f"config key {name!r} must be a number, got {value!r}")
            elif isinstance(expected, int) and not float(value).is_integer():
                errors.append(f"config key {name!r} must be an integer, got {value!r}")
            elif not math.isfinite(float(value)):
                errors.append(f"config key {name!r} must be finite, got {value!r}")
        elif isinstance(expected, str) and not isinstance(value, str):
            errors.append(f"config key {name!r} must be a string, got {value!r}")
    return errors


def stages_of(config: ml_collections.ConfigDict) -> list[str]:
    return [s.strip() for s in config.stages.split(",") if s.strip()]


def split_counts(config: ml_collections.ConfigDict) -> tuple[int, int, int]:
    parts = [int(p) for p in str(config.collect.split).split(",")]
    if len(parts) != 3:
        raise ValueError("config key 'collect.split' must be 'train,val,test' run counts")
    return parts[0], parts[1], parts[2]


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise ValueError listing every problem, each naming its key."""
    errors = _schema_errors(config, base_config())
    if errors:
        raise ValueError("invalid config:\n  " + "\n  ".join(errors))
    c = config
    checks = [
        (all(s in STAGES for s in stages_of(c)), "stages", f"each of {STAGES}"),
        (c.data.format in ("finetune", "instruction"), "data.format", "finetune | instruction"),
        (c.data.pool_size > 0, "data.pool_size", "> 0"),
        (c.data.unseen_size >= 0, "data.unseen_size", ">= 0"),
        (c.data.test_size > 0, "data.test_size", "> 0"),
        (0.0 <= c.data.label_noise <= 1.0, "data.label_noise", "in [0, 1]"),
        (c.data.max_len >= 8, "data.max_len", ">= 8"),
        (c.model.source in MODEL_SOURCES, "model.source", f"one of {MODEL_SOURCES}"),
        (c.model.source == "init" or bool(c.model.path), "model.path", "set for hf/gguf/gptjax"),
        (c.model.pretrain_steps >= 0, "model.pretrain_steps", ">= 0"),
        (
            c.model.source == "init" or c.model.pretrain_steps == 0,
            "model.pretrain_steps",
            "0 unless model.source is init",
        ),
        (c.model.pretrain_lr > 0, "model.pretrain_lr", "> 0"),
        (c.model.pretrain_batch_size > 0, "model.pretrain_batch_size", "> 0"),
        (c.collect.num_runs > 0, "collect.num_runs", "> 0"),
        (c.collect.batch_size > 0, "collect.batch_size", "> 0"),
        (c.collect.epochs > 0, "collect.epochs", "> 0"),
        (
            0 < c.collect.subset_size <= c.data.pool_size,
            "collect.subset_size",
            f"in 1..data.pool_size ({c.data.pool_size})",
        ),
        (c.collect.subset_size >= c.collect.batch_size, "collect.subset_size", ">= batch_size"),
        (c.collect.learning_rate > 0, "collect.learning_rate", "> 0"),
        (c.collect.weight_decay >= 0, "collect.weight_decay", ">= 0"),
        (c.collect.runs_per_device > 0, "collect.runs_per_device", "> 0"),
        (c.collect.eval_chunk > 0, "collect.eval_chunk", "> 0"),
        (c.collect.generation_every >= 0, "collect.generation_every", ">= 0"),
        (0 <= c.collect.unseen_runs <= c.collect.num_runs, "collect.unseen_runs", "<= num_runs"),
        (c.collect.sampling_temperature >= 0, "collect.sampling_temperature", ">= 0"),
        (0 < c.collect.top_p <= 1, "collect.top_p", "in (0, 1]"),
    ]
    errors = [f"config key {key!r} must be {want}" for ok, key, want in checks if not ok]
    try:
        train, val, test = split_counts(c)
        if min(train, val, test) < 0 or train + val + test > c.collect.num_runs:
            errors.append(
                f"config key 'collect.split' ({c.collect.split}) needs train+val+test <= "
                f"collect.num_runs ({c.collect.num_runs}), all >= 0"
            )
        if "simulate" in stages_of(c) and (train < 1 or val < 1 or test < 1):
            errors.append("config key 'collect.split' needs >= 1 train, val and test run")
    except ValueError as err:
        errors.append(str(err))
    if errors:
        raise ValueError("invalid config:\n  " + "\n  ".join(errors))
