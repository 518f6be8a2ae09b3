"""Stage times: every invocation of a stage counts (a job stopped and resumed sums its
parts), Ctrl-C's part is kept, a failure records nothing, old and damaged files are read as
what they are."""

from __future__ import annotations

import json

import pytest

from gptjax.pipeline import Workdir
from gptjax.pipeline.report import STAGE_TIMES_HEADING, render_report
from gptjax.pipeline.timings import (
    TIMINGS,
    StageTimer,
    stage_invocations,
    stage_seconds,
)

ROW = {f"{m}_{s}": 1.0 for m in ("mse", "mae", "final_spearman") for s in ("mean", "std")}


@pytest.fixture
def wd(tmp_path):
    wd = Workdir(tmp_path / "wd")
    wd.results_dir.mkdir(parents=True)
    return wd


def test_invocations_of_a_stage_add_up(wd):
    timer = StageTimer(wd)
    with timer("collect"):
        pass
    with timer("simulate"):
        pass
    with timer("collect"):  # resumed by the same command
        pass
    runs = stage_invocations(wd.results_dir)
    assert [len(runs["collect"]), len(runs["simulate"])] == [2, 1]
    assert all(r["completed"] and r["cpus"] >= 1 and r["load_1m"] >= 0 for r in runs["collect"])
    seconds = stage_seconds(wd.results_dir)
    assert seconds["collect"] == pytest.approx(sum(r["seconds"] for r in runs["collect"]))


def test_ctrl_c_keeps_its_part_and_an_error_records_nothing(wd):
    timer = StageTimer(wd)
    with pytest.raises(KeyboardInterrupt), timer("collect"):
        raise KeyboardInterrupt
    with pytest.raises(ValueError, match="bad input"), timer("simulate"):
        raise ValueError("bad input")
    runs = stage_invocations(wd.results_dir)
    assert list(runs) == ["collect"]
    assert [r["completed"] for r in runs["collect"]] == [False]


def test_a_file_from_before_invocations_were_kept_reads_as_one_each(wd):
    wd.result(TIMINGS).write_text(json.dumps({"collect": 100.5, "simulate": 20}))
    assert stage_seconds(wd.results_dir) == {"collect": 100.5, "simulate": 20.0}
    with StageTimer(wd)("collect"):
        pass
    runs = stage_invocations(wd.results_dir)
    assert len(runs["collect"]) == 2 and runs["collect"][0] == {"seconds": 100.5}
    assert stage_seconds(wd.results_dir)["collect"] >= 100.5


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[1, 2]",
        '{"collect": "fast"}',
        '{"collect": {"seconds": 1, "invocations": [3]}}',
    ],
)
def test_a_damaged_file_is_named_and_moved_aside_by_the_next_stage(wd, text, capsys):
    path = wd.result(TIMINGS)
    path.write_text(text)
    with pytest.raises(ValueError, match=TIMINGS):
        stage_seconds(wd.results_dir)
    with StageTimer(wd)("baselines"):
        pass
    assert path.with_name(TIMINGS + ".damaged").read_text() == text  # nothing lost
    assert "warning:" in capsys.readouterr().err
    assert list(stage_invocations(wd.results_dir)) == ["baselines"]


def test_the_report_shows_totals_invocations_and_load(wd):
    wd.result("baselines.json").write_text(json.dumps({"results": {"loss": {"persistence": ROW}}}))
    wd.result(TIMINGS).write_text(
        json.dumps(
            {
                "collect": {
                    "invocations": [
                        {"seconds": 10.0, "completed": False, "load_1m": 3.9, "cpus": 2},
                        {"seconds": 20.0, "completed": True, "load_1m": 1.2, "cpus": 2},
                    ],
                }
            }
        )
    )
    times = render_report(wd, "t").split(STAGE_TIMES_HEADING)[1]
    assert "| collect | 30.0 | 2 (1 stopped) | 3.9 / 2 |" in times


def test_reading_times_imports_no_jax():
    """experiments.report reads timings through gptjax.pipeline.timings: the package loads
    its stages (and JAX) only when one of its names is used."""
    import subprocess
    import sys

    code = (
        "import sys, gptjax.pipeline.timings, gptjax.pipeline as p\n"
        "assert 'jax' not in sys.modules, 'jax imported'\n"
        "assert sorted(p.__all__) == sorted(p._MODULE_OF)\n"
        "assert p.run_pipeline.__module__ == 'gptjax.pipeline.stages'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
