"""The experiment config: one schema with defaults, that every configs/*.py starts from.

A config file's ``get_config()`` calls `base_config()` and overrides fields; `validate`
rejects unknown keys, wrong types and impossible values, naming the key, before any work
starts (absl + ml_collections.config_flags turn ``--config.a.b=v`` into overrides).

The simulator and baselines sections are built from the methods' own settings dataclasses
(``simulator.FitConfig``, ``baselines.GradConfig``), so each default lives in one place.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
from pathlib import Path
from typing import Any

import ml_collections

from baselines import GRADIENT_METHODS, GradConfig
from gptjax.collect.curricula import steps_per_run
from gptjax.collect.runner import CollectSpec, parse_save_steps
from gptjax.models.transformer import first_trained_layer
from gptjax.tasks.jsonl import JsonlTask
from simulator import KERNEL_METHODS, SIMFLUENCE_DEFAULTS, FitConfig, method_config
from simulator import METHODS as SIMULATORS

STAGES = ("collect", "simulate", "baselines", "report")
DATA_SOURCES = ("local", "tfds")  # for task "jsonl", data.source may also be the JSONL path
MODEL_SOURCES = ("init", "hf", "gguf", "gptjax")
SANITY_METHODS = ("persistence", "mean_trajectory")
# The gradient kernel's projection (gptfluence_kernel, gradient_kernel): chosen on the
# validation runs of benchmarks/simulator_quality (docs/simulator.md).
KERNEL_PROJECTION_DIM = 8192
# The gradient kernel's default since it was chosen on validation runs (docs/simulator.md):
# Adam-preconditioned, averaged over 8 steps of the training runs' mean path.
KERNEL_CHECKPOINTS = 8
KERNEL_PRECONDITION = "adam"
KERNEL_PRECONDITIONERS = ("adam", "none")
# CollectSpec fields that are not keys of the collect section.
_SPEC_FROM_ELSEWHERE = ("seed", "save_steps", "save_from_run")
# GradConfig fields that a baselines method fixes itself (not a config key).
_PER_METHOD_GRAD_FIELDS = ("layers",)


def simulator_section() -> ml_collections.ConfigDict:
    """``config.simulator``. ``models``: comma-separated names from ``simulator.METHODS``
    (gptfluence uses ``gptfluence.variant``; gptfluence_dot / _concat force the variant;
    gptfluence_anchored simulates deviations from the mean training trajectory;
    gptfluence_kernel adds the base model's projected loss-gradient inner products to it, the
    gradient kernel of ``simulator/gptfluence.py``; gradient_kernel is that recurrence with
    the kernel alone, no MLPs). The kernel (``gptjax.pipeline.path_kernel``) is averaged over
    ``kernel_checkpoints`` steps of the training runs' mean parameters (1: the base model)
    and preconditioned by ``kernel_precondition`` (adam | none); with 1 and none it is the
    base model's gradients projected to ``kernel_projection_dim`` dimensions.
    ``metrics``: comma-separated, "" = every metric collected. ``encoder``: where the example
    features come from, ``minilm`` (frozen all-MiniLM-L6-v2 over ``data.encoder_text``) or
    ``gpt`` (the workdir's base model's final hidden states over its own tokens: prompt and
    target) or ``gradient`` (the base model's per-example loss gradients, randomly projected
    to ``gradient_projection_dim`` dimensions with the baselines section's gradient settings,
    whitened by (GᵀG + λ̄I)^(-1/2) when ``gradient_whiten`` = λ > 0; see
    ``gptjax.pipeline.gradient_features``). ``pooling``: mean | cls | pooler for minilm,
    mean | last for gpt, ignored for gradient.
    ``unseen_test``: the last k test examples are left out of every simulator's fit (their
    trajectories are never seen) and scored apart. ``gptfluence`` and ``simfluence`` hold
    ``simulator.FitConfig`` fields (sizes 0 = the paper's for the variant)."""
    c = ml_collections.ConfigDict()
    c.models = "gptfluence,simfluence"
    c.metrics = ""
    c.encoder = "minilm"  # minilm | gpt | gradient
    c.pooling = "mean"  # minilm: mean | cls | pooler; gpt: mean | last
    c.gradient_projection_dim = 512  # encoder gradient: the features' dimension
    c.gradient_whiten = 0.0  # encoder gradient: λ of the TRAK-style whitening; 0 = off
    c.kernel_checkpoints = KERNEL_CHECKPOINTS  # steps of the mean path the kernel averages
    c.kernel_precondition = KERNEL_PRECONDITION  # adam | none
    c.kernel_projection_dim = KERNEL_PROJECTION_DIM  # kernel_checkpoints 1, precondition none
    c.unseen_test = 0  # the last k test examples are held out of the fit
    c.start = 1  # simulate from y_0; steps 1..T are scored
    c.plot_examples = 4
    c.verbose = False
    c.gptfluence = ml_collections.ConfigDict(dataclasses.asdict(FitConfig()))
    c.simfluence = ml_collections.ConfigDict(dataclasses.asdict(SIMFLUENCE_DEFAULTS))
    return c


def baselines_section() -> ml_collections.ConfigDict:
    """``config.baselines``: the methods to score and ``baselines.GradConfig`` fields.

    ``methods``: comma-separated subset of persistence, mean_trajectory and the gradient
    methods tracin_cp_all (every saved step), tracin_cp_k (num_checkpoints evenly spaced saved
    steps), grad_dot (final parameters), each also with the suffix _last_layer."""
    c = ml_collections.ConfigDict()
    c.methods = ",".join(SANITY_METHODS + tuple(GRADIENT_METHODS))
    c.num_checkpoints = 10  # k of tracin_cp_k (the paper's "10 steps")
    c.loss_metric = "loss"  # the metric the gradient methods apply to
    c.start = 1  # steps 0..start-1 are given to every method
    c.save_predictions = True
    for name, value in dataclasses.asdict(GradConfig()).items():
        if name not in _PER_METHOD_GRAD_FIELDS:
            c[name] = value
    return c


def collect_spec(config: ml_collections.ConfigDict) -> CollectSpec:
    """The collect section (and the seed) as a CollectSpec."""
    c = config.collect
    names = [f.name for f in dataclasses.fields(CollectSpec) if f.name not in _SPEC_FROM_ELSEWHERE]
    num_steps = steps_per_run(c.subset_size, c.batch_size, c.epochs)
    return CollectSpec(
        seed=config.seed,
        save_steps=parse_save_steps(c.save_params, num_steps),
        save_from_run=first_saving_run(config),
        **{name: c[name] for name in names},
    )


# collect.save_params_runs: which runs checkpoint their parameters.
SAVE_PARAMS_RUNS = ("all", "test")


def first_saving_run(config: ml_collections.ConfigDict) -> int:
    """The first run that saves parameters: 0, or with ``collect.save_params_runs = "test"``
    the first test run of the split. Runs diverging only move the test runs later (they are
    the valid runs after the training and validation ones), so every test run saves."""
    which = config.collect.save_params_runs
    if which not in SAVE_PARAMS_RUNS:
        raise ValueError(
            f"'collect.save_params_runs' must be {' | '.join(SAVE_PARAMS_RUNS)}, got {which!r}"
        )
    if which == "all":
        return 0
    train, val, _ = split_counts(config)
    return train + val


def collection_regime(config: ml_collections.ConfigDict) -> str:
    """How the runs were collected, in words, for every report: full or partial fine-tuning,
    the evaluation interval and the compute dtype."""
    c = config.collect
    parts = [
        f"partial fine-tuning (top {c.train_layers} block{'s' * (c.train_layers > 1)} "
        "and the final norm)"
        if c.train_layers
        else "full fine-tuning",
        "test losses after every step"
        if c.eval_every == 1
        else f"test losses every {c.eval_every} steps",
        c.compute_dtype,
    ]
    if c.tracin_dots:
        parts.append("TracIn inner products recorded during collection")
    return ", ".join(parts)


def first_layer(config: ml_collections.ConfigDict, model: Any) -> int:
    """The model's first fine-tuned block under ``collect.train_layers`` (0: every parameter
    is trained): where the gradient methods' per-example gradients start."""
    return first_trained_layer(model.config.num_layers, int(config.collect.train_layers))


def grad_config(section: ml_collections.ConfigDict) -> GradConfig:
    """The baselines section's GradConfig fields as a GradConfig."""
    names = [
        f.name for f in dataclasses.fields(GradConfig) if f.name not in _PER_METHOD_GRAD_FIELDS
    ]
    return GradConfig(**{name: section[name] for name in names})


def names_in(value: str) -> list[str]:
    """The items of a comma-separated config value."""
    return [s.strip() for s in str(value).split(",") if s.strip()]


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.stages = "collect,simulate,baselines,report"  # comma-separated subset of STAGES
    c.progress = True  # progress bars of every stage (pretraining, collection, fit, baselines)

    c.data = ml_collections.ConfigDict()
    c.data.task = "demo"
    c.data.format = "finetune"  # finetune | instruction
    c.data.mixture_tasks = ""  # comma-separated components when task == "mixture"
    # local | tfds. For task "jsonl" an older spelling of data.task_kwargs.path (the JSONL file).
    c.data.source = "local"
    c.data.data_root = ""  # "" -> $GPTJAX_DATA_ROOT or ../shared/data
    c.data.pool_size = 200
    c.data.unseen_size = 0
    c.data.test_size = 200
    c.data.label_noise = 0.0
    c.data.encoder_text = "input_target"
    c.data.max_len = 256
    # Wrap every prompt in the tokenizer's own chat template (a user turn, then the assistant's
    # turn opened), for instruct models such as SmolLM2-Instruct; needs a tokenizer that has one.
    c.data.chat_template = False
    # Keywords of the task (docs/tasks.md). Task "jsonl" (docs/own_data.md): path (the JSON Lines
    # file of {input, target}), test_path (a separate test file), label_words (classification).
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
    # pretrain_task_kwargs (the demo: another world, so no facts are shared with the pools;
    # task "jsonl": path = a separate pretraining file). Examples whose text is also a pool,
    # unseen or test example's are dropped.
    c.model.pretrain_steps = 0
    c.model.pretrain_examples = 256
    c.model.pretrain_batch_size = 16
    c.model.pretrain_lr = 3e-3
    c.model.pretrain_task_kwargs = ml_collections.ConfigDict()

    # CollectSpec's fields and defaults; the seed is the top-level one and the saved steps
    # come from save_params.
    c.collect = ml_collections.ConfigDict(
        {
            k: v
            for k, v in dataclasses.asdict(CollectSpec()).items()
            if k not in _SPEC_FROM_ELSEWHERE
        }
    )
    c.collect.save_params = "none"  # none | all | every:m | evenly:k | comma-separated steps
    c.collect.save_params_regex = ""  # save only matching parameter paths ("" = all)
    # all | test: the test runs of collect.split (and any after them) only, which is all the
    # gradient baselines read; the path kernel (kernel_checkpoints > 1) needs "all".
    c.collect.save_params_runs = "all"
    c.collect.unseen_runs = 0
    c.collect.generation_every = 0  # BLEU/ROUGE-L of greedy generations every m steps (0: off)
    c.collect.max_new_tokens = 32
    # Decode this many test examples at a time (0: all at once): bounds the KV cache's memory,
    # runs_per_device x chunk x (prompt + new tokens) x layers; the tokens are the same.
    c.collect.generation_chunk = 0
    c.collect.sampling_temperature = 0.0  # 0: greedy (the default: sampled metrics are noisy)
    c.collect.top_p = 1.0
    c.collect.split = "25,2,5"  # train, validation, test runs (the rest are unused)

    c.simulator = simulator_section()
    c.baselines = baselines_section()
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
    return names_in(config.stages)


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
        (
            c.model.pretrain_steps == 0 or c.model.pretrain_examples >= c.model.pretrain_batch_size,
            "model.pretrain_examples",
            f">= model.pretrain_batch_size ({c.model.pretrain_batch_size})",
        ),
        (
            c.model.source == "init" or not c.model.compact_vocab,
            "model.compact_vocab",
            "false unless model.source is init",
        ),
        (
            c.model.source != "init" or not c.data.chat_template,
            "data.chat_template",
            "false for model.source init (a fresh model's tokenizer has no chat template)",
        ),
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
        (c.collect.warmup_steps >= 0, "collect.warmup_steps", ">= 0"),
        (0 <= c.collect.end_lr_factor <= 1, "collect.end_lr_factor", "in [0, 1]"),
        (0 <= c.collect.b1 < 1, "collect.b1", "in [0, 1)"),
        (0 <= c.collect.b2 < 1, "collect.b2", "in [0, 1)"),
        (c.collect.eps > 0, "collect.eps", "> 0"),
        (c.collect.max_new_tokens > 0, "collect.max_new_tokens", "> 0"),
        (c.collect.weight_decay >= 0, "collect.weight_decay", ">= 0"),
        (c.collect.runs_per_device > 0, "collect.runs_per_device", "> 0"),
        (c.collect.eval_chunk > 0, "collect.eval_chunk", "> 0"),
        (c.collect.generation_every >= 0, "collect.generation_every", ">= 0"),
        (c.collect.generation_chunk >= 0, "collect.generation_chunk", ">= 0"),
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
    errors += _data_errors(c)
    errors += _method_errors(c)
    if errors:
        raise ValueError("invalid config:\n  " + "\n  ".join(errors))


def jsonl_keys() -> tuple[str, ...]:
    """The keywords task "jsonl" takes in ``data.task_kwargs`` / ``model.pretrain_task_kwargs``:
    `JsonlTask`'s own, and the split overrides every task takes."""
    own = [n for n in inspect.signature(JsonlTask.__init__).parameters if n != "self"]
    return (*own, "pool_split", "test_split")


def _jsonl_errors(kwargs: dict[str, Any], prefix: str, *, needs_path: bool) -> list[str]:
    """Task "jsonl"'s keywords: known keys, files that exist, label words that make sense."""
    errors = []
    known = jsonl_keys()
    for key in kwargs:
        if key not in known:
            errors.append(
                f"unknown config key '{prefix}.{key}' for task jsonl; known: {', '.join(known)}"
            )
    for key in ("path", "test_path"):
        value = kwargs.get(key)
        if value is None or value == "":
            if key == "path" and needs_path:
                errors.append(
                    f"config key '{prefix}.path' must name the JSON Lines file of task jsonl "
                    "(docs/own_data.md)"
                )
            continue
        if not isinstance(value, str | os.PathLike):
            errors.append(f"config key '{prefix}.{key}' must be a file path, got {value!r}")
        elif not Path(value).expanduser().is_file():
            errors.append(_not_found(f"{prefix}.{key}", value))
    words = kwargs.get("label_words")
    if words is not None:
        if isinstance(words, str) or not isinstance(words, list | tuple):
            errors.append(
                f"config key '{prefix}.label_words' must be a list of label words such as "
                f"(' no', ' yes'), got {words!r}"
            )
        elif not all(isinstance(w, str) and w.strip() for w in words):
            errors.append(f"config key '{prefix}.label_words' must hold non-empty strings")
        elif len(words) < 2 or len({w.strip() for w in words}) != len(words):
            errors.append(
                f"config key '{prefix}.label_words' must hold at least two distinct words, "
                f"got {list(words)!r}"
            )
    for key in ("pool_split", "test_split"):
        if key in kwargs and not isinstance(kwargs[key], str):
            errors.append(f"config key '{prefix}.{key}' must be a string, got {kwargs[key]!r}")
    return errors


def _not_found(key: str, path: Any) -> str:
    where = "" if Path(path).expanduser().is_absolute() else f" (from {Path.cwd()})"
    return f"config key {key!r}: file not found: {path}{where}"


def _data_errors(c: ml_collections.ConfigDict) -> list[str]:
    """The data source and the keywords of task "jsonl" (data and pretraining), files included."""
    errors = []
    d, m = c.data, c.model
    source_is_path = d.source not in DATA_SOURCES
    if d.task == "jsonl":
        kwargs = d.task_kwargs.to_dict()
        path = kwargs.get("path") or ""
        errors += _jsonl_errors(kwargs, "data.task_kwargs", needs_path=not source_is_path)
        if source_is_path and path and str(path) != d.source:
            errors.append(
                f"the JSONL file is given twice: config key 'data.task_kwargs.path' ({path}) and "
                f"'data.source' ({d.source}); keep data.task_kwargs.path and set data.source "
                "to local"
            )
        elif source_is_path and not path and not Path(d.source).expanduser().is_file():
            errors.append(_not_found("data.source", d.source))
        pretrain = m.pretrain_task_kwargs.to_dict()
        errors += _jsonl_errors(pretrain, "model.pretrain_task_kwargs", needs_path=False)
    elif source_is_path:
        errors.append(
            f"config key 'data.source' must be one of {DATA_SOURCES} (a file path is for task "
            f"jsonl), got {d.source!r}"
        )
    if d.task == "mixture" and "jsonl" in names_in(d.mixture_tasks):
        for section, prefix, needs in (
            (d.task_kwargs, "data.task_kwargs.jsonl", True),
            (m.pretrain_task_kwargs, "model.pretrain_task_kwargs.jsonl", False),
        ):
            kwargs = section.to_dict().get("jsonl", {})
            if not isinstance(kwargs, dict):
                errors.append(f"config key {prefix!r} must be a section, got {kwargs!r}")
            else:
                errors += _jsonl_errors(kwargs, prefix, needs_path=needs)
    return errors


# name: poolings (none: the encoder pools nothing and ignores simulator.pooling)
ENCODERS = {"minilm": ("mean", "cls", "pooler"), "gpt": ("mean", "last"), "gradient": ()}


def _encoder_errors(c: ml_collections.ConfigDict) -> list[str]:
    """The simulators' features (encoder, pooling) and the held-out test examples."""
    s = c.simulator
    if s.encoder not in ENCODERS:
        return [f"config key 'simulator.encoder' must be {' | '.join(ENCODERS)}, got {s.encoder!r}"]
    errors = []
    poolings = ENCODERS[s.encoder]
    if poolings and s.pooling not in poolings:
        errors.append(
            f"config key 'simulator.pooling' must be {' | '.join(poolings)} with encoder "
            f"{s.encoder}, got {s.pooling!r}"
        )
    if s.encoder == "gradient":
        errors += _gradient_encoder_errors(c)
    if set(names_in(s.models)) & set(KERNEL_METHODS):
        errors += _kernel_errors(c)
        if s.kernel_checkpoints != 1 and c.collect.save_params_runs == "test":
            errors.append(
                f"config key 'simulator.kernel_checkpoints' ({s.kernel_checkpoints}): the path "
                "kernel averages the training runs' saved parameters, which "
                "collect.save_params_runs = 'test' does not save (set it to 1, the base "
                "model's kernel, or save_params_runs to 'all')"
            )
    if not 0 <= s.unseen_test < c.data.test_size:
        errors.append(
            f"config key 'simulator.unseen_test' must be in 0..{c.data.test_size - 1} "
            f"(data.test_size - 1: at least one test example is seen), got {s.unseen_test}"
        )
    return errors


def _kernel_errors(c: ml_collections.ConfigDict) -> list[str]:
    """The gradient kernel's settings (kernel_checkpoints, kernel_precondition and, for the
    projected kernel, kernel_projection_dim)."""
    s = c.simulator
    count, pre = s.kernel_checkpoints, s.kernel_precondition
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        return [f"config key 'simulator.kernel_checkpoints' must be an integer >= 1, got {count!r}"]
    if pre not in KERNEL_PRECONDITIONERS:
        return [
            f"config key 'simulator.kernel_precondition' must be "
            f"{' | '.join(KERNEL_PRECONDITIONERS)}, got {pre!r}"
        ]
    if count == 1 and pre == "none":
        return _projection_errors(c, "kernel_projection_dim")
    return []


def simulator_grad_config(
    config: ml_collections.ConfigDict, dim_key: str = "gradient_projection_dim"
) -> GradConfig:
    """The GradConfig of the gradient encoder (or, with ``dim_key="kernel_projection_dim"``,
    of the gradient kernel): the baselines section's gradient settings over every parameter,
    projected to ``simulator.<dim_key>`` dimensions."""
    return dataclasses.replace(
        grad_config(config.baselines),
        layers="all",
        projection_dim=int(config.simulator[dim_key]),
    )


def _projection_errors(c: ml_collections.ConfigDict, key: str) -> list[str]:
    """``simulator.<key>``, a gradient projection's dimension."""
    dim = c.simulator[key]
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        return [f"config key 'simulator.{key}' must be an integer >= 1, got {dim!r}"]
    block = c.baselines.projection_block
    if block and dim % (block * block):
        return [
            f"config key 'simulator.{key}' ({dim}) must be a multiple of "
            f"baselines.projection_block² ({block * block})"
        ]
    return []


def _gradient_encoder_errors(c: ml_collections.ConfigDict) -> list[str]:
    """The gradient encoder's keys (checked only when it is the encoder)."""
    lam = c.simulator.gradient_whiten
    if isinstance(lam, bool) or not isinstance(lam, int | float) or not 0 <= lam < math.inf:
        return [
            f"config key 'simulator.gradient_whiten' must be a finite λ >= 0 (0 = off), got {lam!r}"
        ]
    return _projection_errors(c, "gradient_projection_dim")


def _method_errors(c: ml_collections.ConfigDict) -> list[str]:
    """Every method's section checked by the method's own settings class, before any work."""
    errors = []
    if c.collect.subset_size > 0 and c.collect.batch_size > 0 and c.collect.epochs > 0:
        steps = steps_per_run(c.collect.subset_size, c.collect.batch_size, c.collect.epochs)
        try:
            collect_spec(c)  # CollectSpec checks its own fields (and save_params parses)
        except ValueError as err:
            message = str(err)
            errors.append(message if message.startswith("config key") else f"config key {message}")
    for name in names_in(c.simulator.models):
        if name not in SIMULATORS:
            errors.append(
                f"config key 'simulator.models': unknown {name!r}; known: {', '.join(SIMULATORS)}"
            )
            continue
        # The section's settings only: the kernel's size is checked by _projection_errors.
        kernel_dim = 1 if name in KERNEL_METHODS else 0
        try:
            method_config(name, c.simulator.gptfluence, c.simulator.simfluence, kernel_dim)
        except (ValueError, TypeError) as err:
            section = "simfluence" if name == "simfluence" else "gptfluence"
            errors.append(f"config section 'simulator.{section}': {err}")
    errors += _encoder_errors(c)
    known = SANITY_METHODS + tuple(GRADIENT_METHODS)
    unknown = [m for m in names_in(c.baselines.methods) if m not in known]
    if unknown:
        errors.append(
            f"config key 'baselines.methods': unknown {unknown}; known: {', '.join(known)}"
        )
    asked = [m for m in names_in(c.baselines.methods) if m in GRADIENT_METHODS]
    if c.collect.train_layers:
        # Partial fine-tuning: the unembedding is frozen, and only saved parameters (or the
        # inner products recorded during collection) say where the trained blocks went.
        last_layer = [m for m in asked if m.endswith("_last_layer")]
        if last_layer:
            errors.append(
                f"config key 'baselines.methods': {', '.join(last_layer)} differentiate the "
                "unembedding, which collect.train_layers > 0 leaves frozen"
            )
        from_dots = c.collect.tracin_dots and "tracin_cp_all" in asked
        need_saved = [m for m in asked if not (m == "tracin_cp_all" and from_dots)]
        if need_saved and str(c.collect.save_params).strip() in ("", "none"):
            errors.append(
                f"config key 'collect.save_params': {', '.join(need_saved)} need the trained "
                "blocks' saved parameters with collect.train_layers > 0 (set e.g. 'evenly:10'"
                "; tracin_cp_all also comes from collect.tracin_dots = True)"
            )
    if c.baselines.num_checkpoints < 1:
        errors.append("config key 'baselines.num_checkpoints' must be >= 1")
    steps = 0
    if c.collect.subset_size > 0 and c.collect.batch_size > 0 and c.collect.epochs > 0:
        steps = steps_per_run(c.collect.subset_size, c.collect.batch_size, c.collect.epochs)
    for key in ("simulator.start", "baselines.start"):
        section, field = key.split(".")
        if not 1 <= c[section][field] <= max(steps, 1):
            errors.append(f"config key {key!r} must be in 1..{steps} (the steps of a run)")
    recorded = ("loss", "bleu", "rougeL") if c.collect.generation_every > 0 else ("loss",)
    for name in names_in(c.simulator.metrics):
        if name not in recorded:
            errors.append(
                f"config key 'simulator.metrics': {name!r} is not recorded (recorded: "
                f"{', '.join(recorded)}; BLEU / ROUGE-L need collect.generation_every > 0)"
            )
    if c.baselines.loss_metric not in recorded:
        errors.append(
            f"config key 'baselines.loss_metric': {c.baselines.loss_metric!r} is not recorded"
        )
    try:
        grad_config(c.baselines)
    except ValueError as err:
        errors.append(f"config section 'baselines': {err}")
    return errors
