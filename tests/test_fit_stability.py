"""experiments.fit_stability: refitting a finished workdir's simulator reproduces the simulate
stage's figure with the config's settings, leaves the workdir's simulators untouched, and
gives one row per fit seed and perturbation."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import fit_stability
from gptjax.pipeline.workdir import Workdir
from tests.installed import skip_without_models

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "tests" / "configs" / "tiny.py"


def tiny_config():
    c = runpy.run_path(str(TINY))["get_config"]()
    c.stages = "collect,simulate"
    c.simulator.models = "gptfluence,simfluence"
    for section in (c.simulator.gptfluence, c.simulator.simfluence):
        section.epochs = 3
        section.min_steps = 0
        section.warmup_steps = 2
        section.batch_size = 32
    c.simulator.gptfluence.hidden = 16
    c.simulator.gptfluence.out_dim = 16
    return c


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    skip_without_models()
    from gptjax.pipeline import run_pipeline

    workdir = tmp_path_factory.mktemp("stability") / "wd"
    run_pipeline(tiny_config(), workdir)
    return workdir


def fit_files(workdir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(workdir)): p.read_bytes()
        for p in sorted((workdir / "simulators").rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("method", ["gptfluence", "simfluence"])
def test_config_settings_reproduce_the_stored_figure(finished, method):
    stored = json.loads((finished / "results" / "simulators.json").read_text())
    before = fit_files(finished)
    result = fit_stability.refit_spread(
        tiny_config(),
        Workdir(finished),
        method=method,
        metric="loss",
        fit_seeds=1,
        perturb=[1e-3],
        draws=1,
    )
    assert result["rows"][0]["mse"] == stored["results"]["loss"][method]["mse_mean"]
    assert [r["variant"] for r in result["rows"]] == [
        "the config's settings",
        f"fit seed {tiny_config().simulator[method].seed + 100}",
        "targets x (1 + 0.001 z), draw 1",
    ]
    mses = [r["mse"] for r in result["rows"]]
    assert result["min"] == min(mses) and result["max"] == max(mses)
    mean_row = stored["results"]["loss"]["mean_trajectory"]["mse_mean"]
    assert result["mean_trajectory_mse"] == pytest.approx(mean_row, rel=1e-6)
    assert fit_files(finished) == before  # every refit went to a temporary folder


def test_unknown_metric_and_bad_sizes_are_refused(finished):
    with pytest.raises(ValueError, match="bleu.*not recorded"):
        fit_stability.refit_spread(
            tiny_config(),
            Workdir(finished),
            method="gptfluence",
            metric="bleu",
            fit_seeds=0,
            perturb=[],
            draws=0,
        )
    with pytest.raises(ValueError, match="--perturb"):
        fit_stability.refit_spread(
            tiny_config(),
            Workdir(finished),
            method="gptfluence",
            metric="loss",
            fit_seeds=0,
            perturb=[2.0],
            draws=1,
        )


def test_command_line_error_is_one_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.fit_stability",
            "--config",
            str(TINY),
            "--workdir",
            str(tmp_path / "absent"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: ")
    assert len(proc.stderr.strip().splitlines()) == 1
