"""The paper-scale config (configs/paper_pythia410m.py) end to end, as its docstring runs it,
on a tiny checkpoint of Pythia's layout: a GPT-NeoX Hugging Face directory (config.json +
safetensors + the Pythia tokenizer) that the config reads from ``$GPTJAX_PYTHIA410M``.

No Pythia-410M checkpoint is on these machines, so this is what shows the config runs: its
loading from a local HF directory, its unembedding-only saves of the test runs alone, its
last-layer gradient baselines and its projected gradient kernel, on SST-2 and on the
instruction mixture (whose decodes give BLEU and ROUGE-L). Only the sizes are overridden
(pool, test set, runs, steps, decode length and interval), never what the config chooses.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gptjax import paths
from gptjax.store import RunStore
from tests.installed import skip_without_models
from tests.test_configs import commands, load_module

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "configs" / "paper_pythia410m.py"

# The protocol made small; everything else is the config's own.
SIZES = {
    "data.pool_size": 16,
    "data.test_size": 4,
    "data.max_len": 64,
    "collect.num_runs": 6,
    "collect.subset_size": 8,
    "collect.epochs": 1,
    "collect.runs_per_device": 2,
    "collect.split": "3,1,2",
    "simulator.gptfluence.epochs": 2,
    "simulator.simfluence.epochs": 2,
    "simulator.kernel_projection_dim": 64,
    "progress": False,
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide GPT-NeoX in Pythia's layout (rotary on a quarter of each head,
    parallel residual, untied unembedding, vocabulary 50304), saved as an HF directory."""
    from gptjax.models import init_model, pythia_style, save_hf_model

    skip_without_models()
    folder = tmp_path_factory.mktemp("pythia_tiny")
    save_hf_model(init_model(pythia_style(hidden_size=32, num_layers=2, num_heads=4)), folder)
    shutil.copy(paths.pythia_tokenizer(), folder / "tokenizer.json")
    return folder


def docstring_command() -> list[str]:
    """The config's own seeds command, from its docstring."""
    found = [
        (module, args)
        for module, args in commands(load_module(CONFIG).__doc__)
        if module == "gptjax.pipeline.seeds"
    ]
    assert found, "configs/paper_pythia410m.py's docstring holds no gptjax.pipeline.seeds command"
    module, args = found[0]
    return ["-m", module, *shlex.split(args)]


def with_option(argv: list[str], flag: str, value: str) -> list[str]:
    """``argv`` with ``flag``'s value replaced by ``value``."""
    i = argv.index(flag)
    return [*argv[: i + 1], value, *argv[i + 2 :]]


# The instruction mixture (five tasks, two of them generation): a pool that holds each task,
# and short decodes at every other step.
MIXTURE_SIZES = {
    "data.pool_size": 20,
    "data.test_size": 5,
    "collect.max_new_tokens": 4,
    "collect.generation_every": 2,
}


@pytest.mark.parametrize("variant", ["", ":mixture"], ids=["sst2", "mixture"])
def test_paper_config_runs_end_to_end_on_a_checkpoint_of_its_layout(checkpoint, tmp_path, variant):
    argv = docstring_command()
    assert "--config" in argv and argv[argv.index("--config") + 1] == "configs/paper_pythia410m.py"
    argv = with_option(argv, "--config", f"configs/paper_pythia410m.py{variant}")
    workdir = tmp_path / "paper"
    argv = with_option(argv, "--seeds", "0")
    argv = with_option(argv, "--workdir", str(workdir))
    argv = with_option(argv, "--out", str(workdir / "seeds.json"))
    sizes = SIZES | (MIXTURE_SIZES if variant else {})
    argv += [f"--config.{key}={value}" for key, value in sizes.items()]
    env = dict(os.environ, GPTJAX_PYTHIA410M=str(checkpoint))
    done = subprocess.run(
        [sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    seed = workdir / "seed_0"
    config = json.loads((seed / "config.json").read_text())
    assert config["model"]["source"] == "hf" and config["model"]["path"] == str(checkpoint)
    # The config's choices survived (only the sizes were overridden).
    assert config["collect"]["save_params"] == "evenly:10"
    assert config["collect"]["learning_rate"] == 1e-5

    simulators = json.loads((seed / "results" / "simulators.json").read_text())["results"]
    baselines = json.loads((seed / "results" / "baselines.json").read_text())["results"]
    loss = simulators["loss"] | baselines["loss"]
    expected = {
        "gptfluence",
        "simfluence",
        "gptfluence_kernel",
        "gradient_kernel",
        "persistence",
        "mean_trajectory",
        "tracin_cp_k_last_layer",
        "grad_dot_last_layer",
    }
    assert expected <= set(loss), sorted(loss)
    for method in expected:
        assert np.isfinite(loss[method]["mse_mean"]), method
    for method in ("gptfluence_kernel", "gradient_kernel"):
        assert loss[method]["kernel"] == "base model's gradient kernel, projected to 64 dims"

    # The test runs (the last 2 of split 3,1,2) saved the unembedding alone, at the evenly
    # spaced steps they have; the others saved nothing.
    store = RunStore(seed / "runs")
    assert store.completed() == set(range(6))
    for run in range(6):
        meta = store.read(run).meta
        assert meta["spec"]["save_params_regex"] == "lm_head"
        assert bool(meta["saved_steps"]) == (run >= 4), run
        assert store.checkpoint_dir(run).is_dir() == (run >= 4), run

    if variant:  # BLEU and ROUGE-L, recorded from the decodes, are simulated too
        assert config["data"]["task"] == "mixture"
        assert config["collect"]["generation_chunk"] == 40
        for metric in ("bleu", "rougeL"):
            rows = simulators[metric]
            assert {"gptfluence", "gradient_kernel", "mean_trajectory"} <= set(rows), metric
            assert np.isfinite(rows["gradient_kernel"]["mse_mean"]), metric

    summary = json.loads((workdir / "seeds.json").read_text())
    assert summary["seeds"] == [0]
    assert expected <= set(summary["per_seed"]["0"]["loss"])
