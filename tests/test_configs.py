"""Every experiment config in configs/ loads, validates, documents its command, and (where it
reads data) prepares its pools — cheaply, without building a model or training.

The files are globbed, so a config added later is covered without editing this test. A file
whose ``get_config`` takes a config string (``--config FILE.py:<variant>``) lists the strings
it takes in a module-level ``VARIANTS``; each is validated.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import io
import json
import re
from pathlib import Path

import ml_collections
import pytest

from gptjax.pipeline.config import base_config, validate

REPO = Path(__file__).resolve().parent.parent
CONFIGS = sorted((REPO / "configs").glob("*.py"))
# A command that runs the config: the pipeline, the seeds sweep, a benchmark or an experiment
# script, given ``--config configs/<file>.py`` (optionally ``:<variant>``).
COMMAND = re.compile(
    r"python -m (?P<module>gptjax\.main|gptjax\.pipeline\.seeds|experiments\.\w+|benchmarks\.\w+)"
    r"\b(?P<args>[^\n]*)"
)


def load_module(path: Path):
    spec = importlib.util.spec_from_file_location(f"_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def variants(module) -> list[str | None]:
    """None (the default) and every declared config string."""
    takes_arg = bool(inspect.signature(module.get_config).parameters)
    declared = list(getattr(module, "VARIANTS", ()))
    if takes_arg and not declared:
        raise AssertionError("get_config takes a config string but the file declares no VARIANTS")
    return [None, *declared]


def config_of(module, variant: str | None) -> ml_collections.ConfigDict:
    return module.get_config() if variant is None else module.get_config(variant)


def commands(doc: str) -> list[tuple[str, str]]:
    """(module, arguments) of every ``python -m`` command in a docstring; lines ending in a
    backslash continue on the next line."""
    joined = re.sub(r"\\\n\s*", " ", doc or "")
    return [(m["module"], m["args"]) for m in COMMAND.finditer(joined)]


def runs_file(doc: str, filename: str) -> bool:
    """Whether the docstring holds a command that runs ``configs/<filename>``, with that
    command's module present in the checkout."""
    for module, args in commands(doc):
        if re.search(rf"--config[ =]configs/{re.escape(filename)}(:\S+)?(\s|$)", args):
            if module in ("gptjax.main", "gptjax.pipeline.seeds"):
                return True
            top = module.split(".")[0]
            if (REPO / top / (module.split(".", 1)[1] + ".py")).is_file():
                return True
    return False


def test_configs_are_found():
    names = {p.name for p in CONFIGS}
    assert "demo.py" in names
    for name in (
        "finetune_sst2.py",
        "finetune_rte.py",
        "finetune_boolq.py",
        "finetune_webnlg.py",
        "finetune_wmt16_de_en.py",
        "instruction_mixture.py",
        "ablation_markov_order.py",
        "ablation_checkpoint_interval.py",
        "ablation_encoder.py",
        "ablation_model_size.py",
        "unseen_sst2.py",
        "mislabel_sst2.py",
        "paper_pythia410m.py",
    ):
        assert name in names, f"configs/{name} is missing"


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_loads_and_validates(path):
    module = load_module(path)
    assert callable(getattr(module, "get_config", None)), f"{path.name} has no get_config()"
    for variant in variants(module):
        config = config_of(module, variant)
        validate(config)
        # Every key of the file is a key of the schema (validate says so too) and the file
        # starts from base_config(): the sections are all there.
        assert set(base_config().keys()) <= set(config.keys())
    # Two calls give two independent configs (no module-level state shared between runs).
    a, b = module.get_config(), module.get_config()
    a.seed = a.seed + 1
    assert b.seed != a.seed


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_docstring_holds_its_command(path):
    doc = load_module(path).__doc__
    assert doc, f"{path.name} has no module docstring"
    assert runs_file(doc, path.name), (
        f"the docstring of configs/{path.name} holds no command such as "
        f"`python -m gptjax.main --config configs/{path.name} ...`"
    )


def test_command_check_can_fail():
    assert runs_file("    python -m gptjax.main --config configs/x.py --workdir w\n", "x.py")
    assert runs_file(
        "python -m gptjax.pipeline.seeds \\\n    --config configs/x.py:3 --seeds 0", "x.py"
    )
    assert runs_file("python -m experiments.mislabel --config configs/x.py", "x.py")
    assert not runs_file("python -m gptjax.main --config configs/y.py", "x.py")
    assert not runs_file("python -m gptjax.main --config configs/x.py.bak", "x.py")
    assert not runs_file("A config without any command.", "x.py")
    assert not runs_file("python -m experiments.nosuchscript --config configs/x.py", "x.py")


def test_a_bad_config_is_refused():
    module = load_module(REPO / "configs" / "finetune_sst2.py")
    bad = module.get_config()
    bad.collect.subset_size = bad.data.pool_size + 1
    with pytest.raises(ValueError, match="collect.subset_size"):
        validate(bad)
    bad = module.get_config()
    bad.simulator.gptfluence.orderr = 2  # a typo: an unknown key
    with pytest.raises(ValueError, match="unknown config key 'simulator.gptfluence.orderr'"):
        validate(bad)
    with pytest.raises(ValueError, match="not one of"):
        load_module(REPO / "configs" / "ablation_markov_order.py").get_config("4")


def test_config_strings_reach_get_config_from_the_command_line():
    """``--config FILE.py:<variant>`` (the ablations' commands) calls get_config(variant)."""
    from absl import flags
    from ml_collections import config_flags

    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "config", flag_values=fv)
    fv(["prog", "--config", str(REPO / "configs" / "ablation_markov_order.py") + ":5"])
    assert fv.config.simulator.gptfluence.order == 5


def test_paper_config_takes_the_checkpoint_from_the_environment(monkeypatch):
    monkeypatch.setenv("GPTJAX_PYTHIA410M", "/somewhere/pythia-410m")
    config = load_module(REPO / "configs" / "paper_pythia410m.py").get_config()
    assert config.model.source == "hf"
    assert config.model.path == "/somewhere/pythia-410m"
    c = config.collect
    assert (c.num_runs, c.subset_size // c.batch_size * c.epochs, config.data.test_size) == (
        32,
        96,
        200,
    )


def test_paper_config_checkpoints_leave_room_on_a_64_gib_disk():
    """The unembedding of Pythia-410M (vocabulary 50304 x d_model 1024, float32) at the saved
    steps of the runs that save: the test runs' alone, which is all its gradient baselines
    read (every run's would be 66 GB, nearly all of the accelerator machines' 64 GiB disk)."""
    from gptjax.pipeline.config import collect_spec, split_counts

    config = load_module(REPO / "configs" / "paper_pythia410m.py").get_config()
    validate(config)
    spec = collect_spec(config)
    test = split_counts(config)[2]
    saving = spec.num_runs - spec.save_from_run
    assert saving == test == 5
    total = saving * len(spec.save_steps) * 50304 * 1024 * 4
    assert len(spec.save_steps) == config.baselines.num_checkpoints == 10
    assert total < 16 * 2**30, total / 2**30


def _data_sections() -> dict[str, tuple[Path, str | None]]:
    """One config (and variant) per distinct data + seed + pretraining setting, so shared
    data is loaded once."""
    out: dict[str, tuple[Path, str | None]] = {}
    for path in CONFIGS:
        module = load_module(path)
        for variant in variants(module):
            c = config_of(module, variant)
            key = json.dumps(
                [c.seed, c.data.to_dict(), c.model.source, c.model.pretrain_steps,
                 c.model.pretrain_examples, c.model.pretrain_task_kwargs.to_dict()],
                sort_keys=True,
                default=str,
            )  # fmt: skip
            out.setdefault(key, (path, variant))
    return out


DATA = _data_sections()


@pytest.mark.parametrize(
    "path,variant",
    list(DATA.values()),
    ids=[f"{p.name}:{v}" if v else p.name for p, v in DATA.values()],
)
def test_config_data_prepares(path, variant):
    """The pools build from the data root as the pipeline builds them (no model, no
    training); a fresh model's pretraining examples build too and share no text with the
    pools."""
    from gptjax.pipeline import preparation

    config = config_of(load_module(path), variant)
    pools = preparation.build_config_pools(config)
    d = config.data
    assert len(pools.train) == d.pool_size
    assert len(pools.unseen) == d.unseen_size
    assert len(pools.test) == d.test_size
    if d.label_noise:
        assert sum(map(bool, pools.flipped[: d.pool_size])) == round(d.label_noise * d.pool_size)
    if config.model.source == "init" and config.model.pretrain_steps:
        with contextlib.redirect_stdout(io.StringIO()):
            examples = preparation.pretraining_examples(config, pools)
        texts = {e.input + e.target for e in pools.pool + pools.test}
        assert examples and not any(e.input + e.target in texts for e in examples)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


ABLATION_CHANGES = {
    "ablation_markov_order.py": {"simulator.gptfluence.order"},
    "ablation_checkpoint_interval.py": {"simulator.gptfluence.observe_every"},
    "ablation_encoder.py": {"simulator.encoder", "simulator.pooling"},
    "ablation_model_size.py": {
        "model.hidden_size",
        "model.num_layers",
        "model.num_heads",
        "model.intermediate_size",
    },
}
# What an ablation may also change: which methods run and whether parameters are saved.
METHOD_KEYS = {"simulator.models", "baselines.methods", "collect.save_params", "stages"}


@pytest.mark.parametrize("name", sorted(ABLATION_CHANGES))
def test_ablations_change_only_their_variable(name):
    """Each variant of an ablation is the SST-2 fine-tuning config with only the studied
    field changed (and the set of methods), so its rows are comparable."""
    base = _flat(load_module(REPO / "configs" / "finetune_sst2.py").get_config().to_dict())
    module = load_module(REPO / "configs" / name)
    seen = set()
    for variant in module.VARIANTS:
        flat = _flat(module.get_config(variant).to_dict())
        changed = {k for k in base if base[k] != flat[k]}
        assert changed <= ABLATION_CHANGES[name] | METHOD_KEYS, (variant, changed)
        seen.add(tuple(flat[k] for k in sorted(ABLATION_CHANGES[name])))
    assert len(seen) == len(module.VARIANTS), "two variants give the same config"


def test_the_ladder_base_is_the_sst2_experiment():
    """experiments.report reads the d64 rung from workdirs/finetune_sst2: same config."""
    ladder = load_module(REPO / "configs" / "ablation_model_size.py").get_config("d64")
    sst2 = load_module(REPO / "configs" / "finetune_sst2.py").get_config()
    assert ladder.to_dict() == sst2.to_dict()
