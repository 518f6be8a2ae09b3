"""One experiment over several seeds: every method's figures as mean ± std over seeds.

    python -m gptjax.pipeline.seeds --config configs/demo.py --seeds 0,1,2 \\
        --workdir workdirs/demo_seeds --out docs/results/demo_seeds.json

Seed s sets the collection seed (pools, curricula, base model init, generation keys), the
simulators' fit seeds and the projection seed of the baselines; each seed runs in its own
workdir (``<workdir>/seed_<s>``), so an interrupted sweep resumes. The JSON file holds every
seed's figures and the summary; `seeds_table` renders the README's table from it.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from gptjax import io
from gptjax.cli import quiet_orbax, run_reporting_errors
from gptjax.evaluation import KEYS
from gptjax.pipeline.stages import run_pipeline

# Columns of the table: (key in a results row, heading, digits).
COLUMNS = (
    ("mse_mean", "all-steps MSE", 4),
    ("mae_mean", "all-steps MAE", 4),
    ("final_spearman_mean", "final-step ρ", 3),
    ("across_run_spearman", "across-run ρ", 3),
)


def seeded(config: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(config.to_dict())
    c.seed = seed
    c.simulator.gptfluence.seed = seed
    c.simulator.simfluence.seed = seed
    c.baselines.seed = seed
    return c


def run_seeds(
    config: ml_collections.ConfigDict, seeds: list[int], workdir: str | Path
) -> dict[str, Any]:
    """Run the config once per seed; returns {"seeds", "per_seed", "summary"}."""
    per_seed = {}
    for seed in seeds:
        print(f"=== seed {seed} ===", flush=True)
        results = run_pipeline(seeded(config, seed), Path(workdir) / f"seed_{seed}")
        rows: dict[str, dict[str, dict]] = {}
        for stage_rows in results.values():
            for metric, methods in stage_rows.items():
                rows.setdefault(metric, {}).update(methods)
        per_seed[str(seed)] = {
            metric: {
                method: {k: row[k] for k in KEYS}
                for method, row in methods.items()
                if not row.get("not_applicable")
            }
            for metric, methods in rows.items()
        }
    return {"seeds": list(seeds), "per_seed": per_seed, "summary": summarise(per_seed)}


def summarise(per_seed: dict[str, dict]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """{metric: {method: {key: [mean, std]}}} over the seeds (NaN figures left out)."""
    summary: dict[str, dict[str, dict[str, list[float]]]] = {}
    first = next(iter(per_seed.values()))
    for metric, methods in first.items():
        for method in methods:
            cell = summary.setdefault(metric, {}).setdefault(method, {})
            for key, _, _ in COLUMNS:
                values = [
                    r[metric][method][key]
                    for r in per_seed.values()
                    if method in r.get(metric, {}) and r[metric][method][key] is not None
                ]
                values = [v for v in values if math.isfinite(v)]
                cell[key] = [float(np.mean(values)), float(np.std(values))] if values else None
    return summary


def seeds_table(record: dict[str, Any], metric: str = "loss") -> str:
    """Markdown: one row per method, each column mean ± std over the seeds."""
    n = len(record["seeds"])
    lines = [
        "| method | " + " | ".join(h for _, h, _ in COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    for method, cell in record["summary"][metric].items():
        parts = []
        for key, _, digits in COLUMNS:
            value = cell.get(key)
            parts.append(
                "nan" if value is None else f"{value[0]:.{digits}f} ± {value[1]:.{digits}f}"
            )
        lines.append(f"| {method} | " + " | ".join(parts) + " |")
    seeds = ", ".join(map(str, record["seeds"]))
    lines.append(f"\nMean ± std over {n} seeds ({seeds}), held-out test runs, metric {metric}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    from absl import flags

    del argv
    quiet_orbax()
    f = flags.FLAGS
    run_reporting_errors(lambda: _run(f.seeds, f.workdir, f.out), debug=f.debug)


def parse_seeds(seeds_flag: str) -> list[int]:
    """The ``--seeds`` flag ("0,1,2") as integers; ValueError naming the flag otherwise."""
    try:
        seeds = [int(s) for s in seeds_flag.split(",") if s.strip()]
    except ValueError:
        raise ValueError(
            f"--seeds: {seeds_flag!r} is not a comma-separated list of integers"
        ) from None
    if not seeds:
        raise ValueError("--seeds: give at least one seed")
    return seeds


def _run(seeds_flag: str, workdir: str, out: str) -> None:
    record = run_seeds(_CONFIG.value, parse_seeds(seeds_flag), workdir)
    io.atomic_write_json(out, record)
    print(seeds_table(record), file=sys.stdout)


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    _CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
    flags.DEFINE_string("seeds", "0,1,2", "Comma-separated seeds.")
    flags.DEFINE_string("workdir", None, "Folder holding one workdir per seed.")
    flags.DEFINE_string("out", None, "JSON file for every seed's figures and the summary.")
    flags.DEFINE_bool("debug", False, "Show the traceback of an error.")
    flags.mark_flags_as_required(["config", "workdir", "out"])
    app.run(main)
