"""Results on disk: per-stage tables, CSVs and plots, the numbers as JSON, and the report that
ties them together (rendered from the JSON files alone, so ``stages=report`` works on any
workdir that holds results)."""

from __future__ import annotations

import io as _bytes_io
from pathlib import Path

import numpy as np

from gptjax import io
from gptjax.evaluation import results_csv, results_table
from gptjax.pipeline.timings import stage_time_rows
from gptjax.pipeline.workdir import Workdir

# Stages whose results the report collects: results/<name>.json.
RESULT_FILES = ("simulators", "baselines")
STAGE_TIMES_HEADING = "## Stage times"


def write_stage_results(
    workdir: Workdir, stage: str, results: dict[str, dict], header: str, **extra
) -> None:
    """``results/<stage>.md`` (one table per metric) and ``results/<stage>.json`` (every
    number, plus ``extra``). results: {metric: {method: row from gptjax.evaluation}}."""
    parts = [header, ""]
    for metric, rows in results.items():
        parts += [f"### {metric} (held-out test runs)", "", results_table(rows)]
    io.atomic_write_text(workdir.result(f"{stage}.md"), "\n".join(parts))
    io.atomic_write_json(workdir.result(f"{stage}.json"), {"results": results} | extra)


def write_metric_table(workdir: Workdir, stage: str, metric: str, rows: dict, title: str) -> None:
    io.atomic_write_text(
        workdir.result(f"{stage}_{metric}.md"), f"## {title}\n\n" + results_table(rows)
    )
    io.atomic_write_text(workdir.result(f"{stage}_{metric}.csv"), results_csv(rows))


def write_predictions(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buffer = _bytes_io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    io.atomic_write_bytes(path, buffer.getvalue())


def plot_trajectories(
    path: Path, true: np.ndarray, preds: dict[str, np.ndarray], metric: str, n_examples: int
) -> None:
    """True vs simulated trajectories of the first test run's first ``n_examples`` examples.
    Each line is drawn where it has values (metrics measured every few steps included)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_examples = max(1, min(n_examples, true.shape[2]))
    cols = min(n_examples, 4)
    rows = -(-n_examples // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    steps = np.arange(true.shape[1])
    for e in range(n_examples):
        ax = axes[e // cols][e % cols]
        seen = np.isfinite(true[0, :, e])
        ax.plot(steps[seen], true[0, seen, e], "k.-", lw=1.5, ms=3, label="true")
        for name, p in preds.items():
            drawn = np.isfinite(p[0, :, e])
            ax.plot(
                steps[drawn],
                p[0, drawn, e],
                ".-" if drawn.sum() < len(drawn) else "-",
                lw=1,
                ms=2,
                label=name,
            )
        ax.set_title(f"test run 0, example {e}")
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    buffer = _bytes_io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    io.atomic_write_bytes(path, buffer.getvalue())


def render_report(workdir: Workdir, title: str) -> str:
    """``results/report.md``: every method of every stage, one table per metric, from the
    stages' JSON files. ValueError when the workdir holds no results yet."""
    by_metric: dict[str, dict[str, dict]] = {}
    found = []
    for stage in RESULT_FILES:
        path = workdir.result(f"{stage}.json")
        if not path.is_file():
            continue
        found.append(stage)
        for metric, rows in io.read_json(path)["results"].items():
            by_metric.setdefault(metric, {}).update(rows)
    if not found:
        raise ValueError(
            f"nothing to report in {workdir.root}: no results/simulators.json or "
            "results/baselines.json yet (run the simulate or baselines stage first)"
        )
    lines = [f"# {title}\n"]
    for metric, rows in sorted(by_metric.items()):
        lines += [f"## {metric} (held-out test runs)\n", results_table(rows)]
    times = stage_time_rows(workdir.results_dir)
    if times:
        caption, *table = times
        lines += [f"{STAGE_TIMES_HEADING} {caption}\n", *table, ""]
    report = "\n".join(lines)
    io.atomic_write_text(workdir.report_file, report)
    return report
