"""The whole pipeline end to end on the tiny config: every stage, then a second invocation that
resumes and changes nothing, then ``stages=report`` alone re-rendering the report."""

from __future__ import annotations

import json
import re
import runpy
from pathlib import Path

import numpy as np
import pytest

from gptjax import paths
from gptjax.pipeline import Workdir, run_pipeline
from gptjax.pipeline.report import STAGE_TIMES_HEADING

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "tests" / "configs" / "tiny.py"

if not paths.pythia_tokenizer().is_file():
    pytest.skip("the Pythia tokenizer is not installed", allow_module_level=True)
try:
    paths.minilm_dir()
except FileNotFoundError:
    pytest.skip("all-MiniLM-L6-v2 is not installed", allow_module_level=True)

METHODS = ("gptfluence", "simfluence", "persistence", "mean_trajectory", "tracin_cp_all")


def pipeline_config(stages: str = "collect,simulate,baselines,report"):
    c = runpy.run_path(str(TINY))["get_config"]()
    c.stages = stages
    c.collect.save_params = "all"
    for section in (c.simulator.gptfluence, c.simulator.simfluence):
        section.epochs = 3
        section.min_steps = 0
        section.warmup_steps = 5
        section.batch_size = 32
    c.simulator.gptfluence.hidden = 16
    c.simulator.gptfluence.out_dim = 16
    c.baselines.methods = "persistence,mean_trajectory,tracin_cp_all,grad_dot"
    return c


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file's bytes, with wall-clock fields (seconds, timings) blanked."""
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.name == "timings.json":
            continue  # wall-clock seconds per stage
        data = path.read_bytes()
        if path.name in ("baselines.json", "baselines.md", "report.md"):
            text = data.decode().split(STAGE_TIMES_HEADING)[0]
            text = re.sub(r'"seconds": [0-9.e+-]+', '"seconds": _', text)
            text = re.sub(r"\| [0-9.]+ \|\n", "| _ |\n", text)
            data = text.encode()
        out[str(path.relative_to(root))] = data
    return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pipeline")
    results = run_pipeline(pipeline_config(), workdir)
    return workdir, results


def test_every_stage_writes_its_results(finished):
    workdir, results = finished
    wd = Workdir(workdir)
    assert wd.config_file.is_file() and (wd.model_dir / "config.json").is_file()
    assert wd.runs.completed() == set(range(6))
    loss = results["simulate"]["loss"] | results["baselines"]["loss"]
    for method in METHODS:
        assert np.isfinite(loss[method]["mse_mean"]), method
        assert loss[method]["n_runs"] == 2, method  # the two held-out test runs
    for name in (
        "simulators_loss.md",
        "simulators_loss.csv",
        "simulators_loss.png",
        "simulators.json",
        "baselines.md",
        "baselines.json",
        "report.md",
    ):
        assert wd.result(name).stat().st_size > 0, name
    report = wd.report_file.read_text()
    for method in METHODS:
        assert f"| {method} |" in report, method
    times = report.split(STAGE_TIMES_HEADING)[1]
    for stage in ("prepare", "collect", "simulate", "baselines"):
        assert f"| {stage} |" in times, stage
    saved = json.loads(wd.result("simulators.json").read_text())
    assert saved["results"]["loss"]["gptfluence"]["mse_mean"] == pytest.approx(
        results["simulate"]["loss"]["gptfluence"]["mse_mean"]
    )
    assert saved["test_runs"] == [4, 5]


def test_second_invocation_resumes_and_changes_nothing(finished, monkeypatch):
    import gptjax.collect.runner as runner
    import simulator.training as fit_module

    workdir, _ = finished
    before = snapshot(workdir)
    mtimes = {p: p.stat().st_mtime_ns for p in (workdir / "runs").glob("run_*.npz")}

    def refuse(*args, **kwargs):
        raise AssertionError("a finished step was recomputed")

    monkeypatch.setattr(fit_module, "fit", refuse)
    monkeypatch.setattr(runner, "make_run_block", refuse)  # any collection would build it
    run_pipeline(pipeline_config(), workdir)
    assert snapshot(workdir) == before
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes


def test_report_stage_alone_renders_from_the_workdir(finished, capsys):
    workdir, _ = finished
    report_file = Workdir(workdir).report_file
    expected = report_file.read_text()
    report_file.unlink()
    run_pipeline(pipeline_config("report"), workdir)
    assert report_file.read_text() == expected
    assert "| gptfluence |" in capsys.readouterr().out


def test_report_stage_on_an_empty_workdir_says_so(tmp_path):
    with pytest.raises(ValueError, match="nothing to report"):
        run_pipeline(pipeline_config("report"), tmp_path)


def test_generation_metrics_for_a_test_set_that_mixes_tasks(monkeypatch):
    """An instruction mixture's test set holds classification examples (no references) and
    generation ones: BLEU / ROUGE-L are recorded whichever comes first, each example scored
    against its references or, without any, its target text (a run crashed on this)."""
    from types import SimpleNamespace

    from gptjax.pipeline import stages
    from gptjax.tasks import Example

    cls = Example("Q: is it? A:", " yes", "rte", 1, (), "is it? yes")
    gen = Example("Translate: Hallo", " Hello there", "wmt16_de_en", None, ("Hello there",
                  "Hi there"), "Hallo")  # fmt: skip
    assert stages.generation_references([cls, gen]) == [("yes",), ("Hello there", "Hi there")]
    seen = {}
    monkeypatch.setattr(
        stages, "make_generation_eval", lambda tokens, refs, *a, **k: seen.setdefault("refs", refs)
    )
    monkeypatch.setattr(
        stages, "collect", lambda *a, **k: seen.setdefault("extra", k["extra_eval"])
    )
    config = runpy.run_path(str(TINY))["get_config"]()
    config.collect.generation_every = 4
    prep = SimpleNamespace(
        pools=SimpleNamespace(test=[cls, gen], train=[], unseen=[]),
        test_tokens=None, pool_tokens=SimpleNamespace(loss_inputs=dict),
        model=SimpleNamespace(config=SimpleNamespace(to_dict=dict)), tokenizer=None,
        fingerprint="f", older_fingerprints=(),
    )  # fmt: skip
    prep.test_tokens = SimpleNamespace(loss_inputs=dict)
    stages.collect_stage(config, SimpleNamespace(runs=None), prep)
    assert seen["refs"] == [("yes",), ("Hello there", "Hi there")]
    assert seen["extra"] is not None
