r"""Regenerate EXPERIMENTS.md from the experiments' workdirs; no number in it is typed by hand.

    python -m experiments.report            # harvest finished workdirs, then render
    python -m experiments.report --check    # exit 1 if EXPERIMENTS.md is out of date

Two steps. **Harvest**: for each experiment of `EXPERIMENTS` (and any other ``configs/*.py``
whose docstring names a ``--workdir``), read the results JSON files of its workdir — one
workdir per seed (``<workdir>/seed_<s>/results/{simulators,baselines}.json``, as
``python -m gptjax.pipeline.seeds`` leaves them), else the sweep's ``--out`` file
(``<workdir>/seeds.json``), else a single workdir (``<workdir>/results/``) — and the stage
times (``results/timings.json``), and write a snapshot ``experiments/results/<key>.json``
with copies of its plots. Seeds already in the snapshot that the workdir no longer holds are
kept, so seeds can be added one session at a time. Workdirs are not committed (``workdirs/``
is ignored); the snapshots are, so EXPERIMENTS.md can always be rendered again.
**Render**: EXPERIMENTS.md from the snapshots alone. An experiment without a snapshot is
listed as "not run yet" with its command.

Each table is the paper's layout, one row per method: all-steps MSE (std), all-steps MAE
(std), final-step ρ (std), and LDS. A cell is ``m (s) ± d``: m the mean over seeds of the
seed's figure, s the mean over seeds of its spread (over trajectories for MSE / MAE, over
test runs for ρ, over test examples for LDS: the paper's "(std)"), d the standard deviation
over seeds of the figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from experiments import figures, orderings
from experiments.device_runs import paper_scale_lines
from gptjax import io
from gptjax.pipeline.timings import beside_other_jobs, stage_seconds, stage_summary

REPO = Path(__file__).resolve().parent.parent
SNAPSHOTS = Path("experiments") / "results"
OUT = Path("EXPERIMENTS.md")
RESULT_FILES = ("simulators", "baselines")

# Methods in the paper's order, with their names in the tables; others follow.
METHODS = {
    "gptfluence": "GPTfluence",
    "gptfluence_dot": "GPTfluence (dot)",
    "gptfluence_concat": "GPTfluence (concat)",
    "gptfluence_anchored": "GPTfluence (anchored)",
    "gptfluence_kernel": "GPTfluence + gradient kernel",
    "gradient_kernel": "gradient kernel (no MLPs)",
    "simfluence": "Simfluence",
    "tracin_cp_all": "TracIn-CP (all steps)",
    "tracin_cp_k": "TracIn-CP (10 checkpoints)",
    "grad_dot": "Grad-Dot",
    "tracin_cp_all_last_layer": "TracIn-CP (all steps), last layer",
    "tracin_cp_k_last_layer": "TracIn-CP (10 checkpoints), last layer",
    "grad_dot_last_layer": "Grad-Dot, last layer",
    "persistence": "persistence",
    "mean_trajectory": "mean trajectory",
}
# (mean key, spread key, heading, digits)
COLUMNS = (
    ("mse_mean", "mse_std", "all-steps MSE (std)", 4),
    ("mae_mean", "mae_std", "all-steps MAE (std)", 4),
    ("final_spearman_mean", "final_spearman_std", "final-step ρ (std)", 3),
    ("lds_mean", "lds_std", "LDS (std)", 3),
)
NOT_RUN = "not run yet"
PAPER_SCALE = "paper_pythia410m"  # its section also quotes the accelerator's logged timing
KERNEL = "gradient_kernel"  # the kernel simulator chosen on validation runs (docs/simulator.md)


@dataclasses.dataclass(frozen=True)
class Experiment:
    key: str  # snapshot name (``experiments/results/<key>.json``)
    section: str
    label: str
    config: str  # "configs/x.py" or "configs/x.py:<variant>"
    workdir: str
    script: str = "gptjax.pipeline.seeds"  # or "experiments.mislabel", "gptjax.main"
    seeds: str = "0,1,2"
    args: str = ""  # the script's further flags

    @property
    def command(self) -> str:
        if self.script == "gptjax.pipeline.seeds":
            return (
                f"python -m gptjax.pipeline.seeds --config {self.config} --seeds {self.seeds} "
                f"--workdir {self.workdir} --out {self.workdir}/seeds.json"
            )
        tail = f" --seeds {self.seeds}" if self.script == "experiments.mislabel" else ""
        tail += f" {self.args}" if self.args else ""
        return f"python -m {self.script} --config {self.config} --workdir {self.workdir}{tail}"


def _registry() -> list[Experiment]:
    out = []
    tasks = (
        ("sst2", "SST-2"),
        ("rte", "RTE"),
        ("boolq", "BoolQ"),
        ("webnlg", "WebNLG"),
        ("wmt16_de_en", "WMT16 de→en (Multi30k)"),
    )
    for task, label in tasks:
        name = f"finetune_{task}"
        out.append(Experiment(name, "Fine-tuning", label, f"configs/{name}.py", f"workdirs/{name}"))
    out.append(
        Experiment(
            "instruction_mixture",
            "Instruction tuning",
            "mixture of the five tasks",
            "configs/instruction_mixture.py",
            "workdirs/instruction_mixture",
        )
    )
    # The real pretrained LM, partial fine-tuning (collection dominates: up to two hours per
    # task and seed on 2 CPU cores; configs/smollm2_*.py state the regime). The command is the
    # protocol's three seeds; each section's header says which seeds have run.
    for task, label in (*tasks, ("mixture", "mixture of the five tasks (instruction tuning)")):
        name = f"smollm2_{task}"
        out.append(
            Experiment(
                name,
                "SmolLM2-135M (real pretrained LM, partial fine-tuning)",
                label,
                f"configs/{name}.py",
                f"workdirs/{name}",
            )
        )
    ablations = (
        ("ablation_checkpoint_interval", "Ablation: checkpoint interval", "every", (1, 2, 5, 10)),
        ("ablation_markov_order", "Ablation: Markov order", "order", (1, 2, 3, 5, 10)),
        ("ablation_encoder", "Ablation: encoder", "", ("mean", "cls", "gpt")),
        ("ablation_model_size", "Ablation: model size", "", ("d32", "d64", "d128", "d256")),
    )
    for name, section, prefix, variants in ablations:
        for v in variants:
            sub = f"{prefix}_{v}" if prefix else str(v)
            label = {"every": f"m = {v}", "order": f"n = {v}"}.get(prefix, str(v))
            workdir = f"workdirs/{name}/{sub}"
            if (name, v) == ("ablation_model_size", "d64"):
                # The same config as configs/finetune_sst2.py (tests/test_configs.py checks
                # it): its runs are that experiment's.
                workdir = "workdirs/finetune_sst2"
            out.append(
                Experiment(f"{name}/{sub}", section, label, f"configs/{name}.py:{v}", workdir)
            )
    # The paper's Table 11: unseen training examples, unseen test examples, both.
    unseen = (
        ("train", "SST-2, unseen training examples in the test runs", "workdirs/unseen_sst2"),
        (
            "test",
            "SST-2, test examples held out of the simulators' fit",
            "workdirs/unseen_sst2_test",
        ),
        ("both", "SST-2, unseen training and test examples", "workdirs/unseen_sst2_both"),
    )
    for variant, label, workdir in unseen:
        name = "unseen_sst2" if variant == "train" else f"unseen_sst2_{variant}"
        config = (
            "configs/unseen_sst2.py" if variant == "train" else f"configs/unseen_sst2.py:{variant}"
        )
        out.append(Experiment(name, "Unseen data", label, config, workdir))
    out.append(
        Experiment(
            "mislabel_sst2",
            "Mislabelled data",
            "SST-2, 40% of the pool's labels flipped",
            "configs/mislabel_sst2.py",
            "workdirs/mislabel_sst2",
            script="experiments.mislabel",
            args="--retrain_fractions 0.2,0.4",
        )
    )
    out.append(
        Experiment(
            PAPER_SCALE,
            "Paper scale (accelerator)",
            "Pythia-410M, SST-2",
            "configs/paper_pythia410m.py",
            "workdirs/paper_pythia410m",
        )
    )
    return out


EXPERIMENTS = _registry()
# Configs that are not experiments of this page.
NOT_EXPERIMENTS = ("demo.py", "own_data_example.py")


def discovered(repo: Path, known: list[Experiment]) -> list[Experiment]:
    """Configs not in the registry whose docstring holds a pipeline command with a
    ``--workdir``: listed under "Other configs" (e.g. other base models' configs)."""
    registered = {e.config.split(":")[0] for e in known}
    out = []
    for path in sorted((repo / "configs").glob("*.py")):
        rel = f"configs/{path.name}"
        if rel in registered or path.name in NOT_EXPERIMENTS:
            continue
        doc = re.sub(r"\\\n\s*", " ", _docstring(path))
        for m in re.finditer(r"python -m (gptjax\.pipeline\.seeds|gptjax\.main)\b([^\n]*)", doc):
            args = m.group(2)
            config = re.search(rf"--config[ =]({re.escape(rel)}(?::\S+)?)", args)
            workdir = re.search(r"--workdir[ =](\S+)", args)
            if config and workdir:
                seeds = re.search(r"--seeds[ =](\S+)", args)
                wd = workdir.group(1)
                out.append(
                    Experiment(
                        path.stem,
                        "Other configs",
                        path.stem,
                        config.group(1),
                        wd,
                        script=m.group(1),
                        seeds=seeds.group(1) if seeds else "0",
                    )
                )
                break
    return out


def _docstring(path: Path) -> str:
    import ast

    return ast.get_docstring(ast.parse(path.read_text())) or ""


# ---- harvest ---------------------------------------------------------------------------------
def _rows_of(results_dir: Path) -> dict[str, dict[str, dict]]:
    rows: dict[str, dict[str, dict]] = {}
    for stage in RESULT_FILES:
        path = results_dir / f"{stage}.json"
        if path.is_file():
            for metric, methods in io.read_json(path)["results"].items():
                rows.setdefault(metric, {}).update(methods)
    return rows


def harvest_workdir(workdir: Path) -> dict[str, Any] | None:
    """{"per_seed", "stage_seconds", "plots_from", "source"} from a workdir, or None when it
    holds no results."""
    seed_dirs = sorted(
        (p for p in workdir.glob("seed_*") if p.is_dir() and p.name[5:].lstrip("-").isdigit()),
        key=lambda p: int(p.name[5:]),
    )
    per_seed, results_dirs = {}, {}
    for d in seed_dirs:
        rows = _rows_of(d / "results")
        if rows:
            per_seed[d.name[5:]] = rows
            results_dirs[d.name[5:]] = d / "results"
    if per_seed:
        first = next(iter(per_seed))
        plots = workdir / f"seed_{first}" / "results"
        return _record(per_seed, results_dirs, plots, "seed workdirs")
    sweep = workdir / "seeds.json"
    if sweep.is_file():
        return _record(io.read_json(sweep)["per_seed"], {}, None, "seeds.json")
    rows = _rows_of(workdir / "results")
    if rows:
        config = workdir / "config.json"
        seed = str(io.read_json(config).get("seed", 0)) if config.is_file() else "0"
        results = workdir / "results"
        return _record({seed: rows}, {seed: results}, results)
    return None


def _record(per_seed, results_dirs, plots_from, source="workdir") -> dict[str, Any]:
    return {
        "per_seed": per_seed,
        **_stage_times(results_dirs),
        "plots_from": plots_from,
        "plots_seed": next(iter(per_seed)) if plots_from is not None else None,
        "source": source,
    }


def _stage_times(results_dirs: dict[str, Path]) -> dict[str, dict]:
    """The snapshot's stage times per seed: seconds, and how each stage ran (invocations,
    load; None where the workdir kept only each stage's last invocation)."""
    return {
        "stage_seconds": {s: stage_seconds(d) for s, d in results_dirs.items()},
        "stage_runs": {s: stage_summary(d) for s, d in results_dirs.items()},
    }


def plots_seed(record: dict) -> str | None:
    """The seed whose plots a snapshot holds (older snapshots: their lowest seed, the one
    harvesting then copied)."""
    if "plots_seed" in record:
        return record["plots_seed"]
    seeds = list(record.get("per_seed") or mislabel_records(record))
    return min(seeds, key=int) if seeds and record.get("plots") else None


def harvest(repo: Path, experiments: list[Experiment], snapshots: Path) -> list[str]:
    """Write a snapshot for every experiment whose workdir holds results; returns their keys."""
    done = []
    for e in experiments:
        workdir = repo / e.workdir
        if e.script == "experiments.mislabel":
            found = _harvest_mislabel(workdir)
        else:
            found = harvest_workdir(workdir) if workdir.is_dir() else None
        if found is None:
            continue
        snapshot = repo / snapshots / f"{e.key}.json"
        earlier = io.read_json(snapshot) if snapshot.is_file() else {}
        workdir_seeds = set(found["per_seed"]) | set(found.get("mislabel_per_seed", {}))
        found = _keep_earlier_seeds(found, snapshot)
        target = repo / snapshots / e.key
        plots = []
        source = found.pop("plots_from")
        kept = plots_seed(earlier)
        if (
            source is not None
            and kept is not None
            and kept not in workdir_seeds
            and int(kept) < int(found["plots_seed"])
        ):
            # The earlier snapshot's plots come from a lower seed whose workdir has gone:
            # keep them (the plots stay those of the lowest seed).
            source, plots, found["plots_seed"] = None, list(earlier["plots"]), kept
        if source is not None:
            if target.is_dir():
                shutil.rmtree(target)
            for png in sorted(Path(source).glob("*.png")):
                target.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(png, target / png.name)
                plots.append(str((snapshots / e.key / png.name).as_posix()))
        record = {
            "key": e.key,
            "config": e.config,
            "command": e.command,
            "workdir": e.workdir,
            "plots": plots,
        } | found
        io.atomic_write_json(repo / snapshots / f"{e.key}.json", record)
        done.append(e.key)
    return done


def _keep_earlier_seeds(found: dict[str, Any], snapshot: Path) -> dict[str, Any]:
    """Seeds of the earlier snapshot that the workdir no longer holds stay in it (workdirs
    are not committed, so a later seed may be run on a machine without the earlier ones); a
    seed the workdir holds replaces its earlier figures. Their union is sorted by seed."""
    if not snapshot.is_file() or "per_seed" not in found:
        return found
    earlier = io.read_json(snapshot)
    seconds = earlier.get("stage_seconds", {}) | found["stage_seconds"]
    stage_runs = earlier.get("stage_runs", {}) | found.get("stage_runs", {})
    merged = {"per_seed": earlier.get("per_seed", {}) | found["per_seed"]}
    if "mislabel_per_seed" in found:
        merged["mislabel_per_seed"] = mislabel_records(earlier) | found["mislabel_per_seed"]
    seeds = sorted({s for table in merged.values() for s in table}, key=int)
    merged = {k: {s: table[s] for s in seeds if s in table} for k, table in merged.items()}
    return (
        found
        | merged
        | {"stage_seconds": {s: seconds[s] for s in seeds if s in seconds}}
        | {"stage_runs": {s: stage_runs.get(s) for s in seeds if s in seconds}}
    )


def _harvest_mislabel(workdir: Path) -> dict[str, Any] | None:
    """{"mislabel_per_seed": {seed: record}, ...} from ``<workdir>/seed_<s>/results/`` (as
    ``experiments.mislabel --seeds`` leaves them) and ``<workdir>/results/`` (one run, its
    config's seed)."""
    found: dict[str, Path] = {}
    single = workdir / "results"
    if (single / "mislabel.json").is_file():
        config = workdir / "config.json"
        seed = str(io.read_json(config).get("seed", 0)) if config.is_file() else "0"
        found[seed] = single
    for d in sorted(workdir.glob("seed_*"), key=lambda p: p.name):
        if d.name[5:].isdigit() and (d / "results" / "mislabel.json").is_file():
            found[d.name[5:]] = d / "results"
    if not found:
        return None
    order = sorted(found, key=int)
    return {
        "mislabel_per_seed": {s: io.read_json(found[s] / "mislabel.json") for s in order},
        **_stage_times({s: found[s] for s in order}),
        "plots_from": found[order[0]],
        "plots_seed": order[0],
        "source": "mislabel.json",
        "per_seed": {},
    }


def mislabel_records(record: dict) -> dict[str, dict]:
    """{seed: mislabel record} of a snapshot (older snapshots hold one, seed 0's, as
    ``"mislabel"``)."""
    if "mislabel_per_seed" in record:
        return record["mislabel_per_seed"]
    return {"0": record["mislabel"]} if "mislabel" in record else {}


# ---- render ----------------------------------------------------------------------------------
def _finite(values) -> list[float]:
    out = []
    for v in values:
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            out.append(float(v))
    return out


def summarise(per_seed: dict[str, dict]) -> dict[str, dict[str, dict[str, Any]]]:
    """{metric: {method: {key: (mean over seeds, std over seeds, n) or None, "seeds": the
    seeds averaged, "not_applicable": reason}}}; the LDS falls back to
    ``across_run_spearman`` for rows without ``lds_mean``."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for rows in per_seed.values():
        for metric, methods in rows.items():
            for method in methods:
                out.setdefault(metric, {}).setdefault(method, {})
    for metric, methods in out.items():
        for method, cell in methods.items():
            seeds = [s for s, r in per_seed.items() if method in r.get(metric, {})]
            rows = [per_seed[s][metric][method] for s in seeds]
            reasons = [r.get("reason", "not applicable") for r in rows if r.get("not_applicable")]
            if reasons and len(reasons) == len(rows):
                cell["not_applicable"] = reasons[0]
                continue
            cell["seeds"] = [
                s for s, r in zip(seeds, rows, strict=True) if not r.get("not_applicable")
            ]
            rows = [r for r in rows if not r.get("not_applicable")]
            # {note: the seeds whose row carries it}: a note that holds on some seeds only
            # (an early stop at the initial state, say) must not read as holding on all.
            notes: dict[str, list[str]] = {}
            for seed, r in zip(cell["seeds"], rows, strict=True):
                if r.get("note"):
                    notes.setdefault(str(r["note"]), []).append(seed)
            cell["notes"] = dict(sorted(notes.items()))
            for mean_key, spread_key, _, _ in COLUMNS:
                for key in (mean_key, spread_key):
                    values = [r.get(key) for r in rows]
                    if key.startswith("lds_"):
                        alt = "across_run_spearman" if key == "lds_mean" else None
                        values = [
                            r.get(key, r.get(alt) if alt else None) for r in rows
                        ]  # older rows
                    v = _finite(values)
                    cell[key] = (float(np.mean(v)), float(np.std(v)), len(v)) if v else None
    return out


def _cell(cell: dict, mean_key: str, spread_key: str, digits: int) -> str:
    m, s = cell.get(mean_key), cell.get(spread_key)
    if m is None:
        return "–"
    text = f"{m[0]:.{digits}f}"
    if s is not None:
        text += f" ({s[0]:.{digits}f})"
    if m[2] > 1:
        text += f" ± {m[1]:.{digits}f}"
    return text


def _ordered(methods) -> list[str]:
    known = [m for m in METHODS if m in methods]
    return known + sorted(m for m in methods if m not in METHODS)


def method_table(summary_metric: dict[str, dict]) -> str:
    lines = [
        "| method | " + " | ".join(h for _, _, h, _ in COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    skipped, notes, fewer = [], [], []
    # A method some seeds did not run (a seed collected before it was possible) is averaged
    # over fewer seeds than the rest of the table: its row says so.
    most = max((len(c.get("seeds", ())) for c in summary_metric.values()), default=0)
    for method in _ordered(summary_metric):
        cell = summary_metric[method]
        if "not_applicable" in cell:
            skipped.append((METHODS.get(method, method), cell["not_applicable"]))
            continue
        parts = [_cell(cell, a, b, d) for a, b, _, d in COLUMNS]
        mark = " \\*" if cell.get("notes") else ""
        if "seeds" in cell and len(cell["seeds"]) < most:
            mark += " ‡"
            fewer.append((METHODS.get(method, method), cell["seeds"]))
        lines.append(f"| {METHODS.get(method, method)}{mark} | " + " | ".join(parts) + " |")
        for note, seeds in cell.get("notes", {}).items():
            where = ""
            if len(seeds) < len(cell["seeds"]):
                where = f" (seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)} only)"
            notes.append(f"\n\\* {METHODS.get(method, method)}{where}: {note}")
    lines += notes
    for name, seeds in fewer:
        lines.append(
            f"\n‡ {name}: over seed(s) {', '.join(seeds)} only ({len(seeds)} of {most}); the "
            "other seeds' runs did not record it."
        )
    for reason in sorted({r for _, r in skipped}):
        names = ", ".join(n for n, r in skipped if r == reason)
        lines.append(f"\nNot applicable: {names} ({reason}).")
    return "\n".join(lines) + "\n"


def fewer_methods(record: dict) -> dict[str, list[str]]:
    """{seed: the methods other seeds have and it lacks} for the seeds of a record whose
    method sets differ (e.g. collected before the trained blocks were saved): their simulate
    and baselines stages ran less, so a mean of stage times over all seeds mixes two kinds."""
    per_seed = record.get("per_seed") or {}
    had = {s: {m for rows in r.values() for m in rows} for s, r in per_seed.items()}
    union = set().union(*had.values()) if had else set()
    return {
        s: _ordered(union - methods)
        for s, methods in sorted(had.items(), key=lambda kv: int(kv[0]))
        if union - methods
    }


def _fewer_methods_note(record: dict) -> str:
    gaps = fewer_methods(record)
    return "; ".join(
        f"seed {s} ran without {', '.join(METHODS.get(m, m) for m in missing)}, so its "
        "simulate and baselines times are not like the others'"
        for s, missing in gaps.items()
    )


def _wall(record: dict) -> str:
    seconds = record.get("stage_seconds") or {}
    totals = [sum(_finite(t.values())) for t in seconds.values() if t]
    if not totals:
        return "not recorded"
    stages = sorted({s for t in seconds.values() for s in t})
    per_stage = ", ".join(
        f"{s} {np.mean(_finite(t.get(s) for t in seconds.values())):.0f} s" for s in stages
    )
    mixed = _fewer_methods_note(record)
    return (
        f"{np.mean(totals):.0f} s per seed ({per_stage}; mean over {len(totals)} seed(s); "
        f"{_how_timed(record)}{'; ' + mixed if mixed else ''})"
    )


def _how_timed(record: dict) -> str:
    """What the stage times count: every invocation (naming seeds whose stages were resumed
    or shared the machine) or, for workdirs written before that was kept, the last one."""
    runs = record.get("stage_runs") or {}
    seeds = list(record.get("stage_seconds") or {})
    kept = [s for s in seeds if runs.get(s) is not None]
    last = "each stage's last invocation: a resumed stage counts its last part only"
    if not kept:
        return last
    notes = []
    for seed in kept:
        for stage, r in sorted(runs[seed].items()):
            if r["invocations"] > 1:
                notes.append(f"seed {seed} {stage} in {r['invocations']} parts")
            if beside_other_jobs(r):
                notes.append(f"seed {seed} {stage} beside other jobs (load {r['max_load_1m']:.1f})")
    summed = "each stage summed over its invocations"
    if len(kept) < len(seeds):
        others = ", ".join(s for s in seeds if s not in kept)
        summed = f"seed(s) {', '.join(kept)}: {summed}; seed(s) {others}: {last}"
    return summed + (f"; {'; '.join(notes)}" if notes else "")


def _seeds_line(record: dict) -> str:
    seeds = sorted(record.get("per_seed", {}), key=lambda s: int(s))
    return f"{len(seeds)} seed(s) ({', '.join(seeds)})" if seeds else "no seeds"


def render_experiment(e: Experiment, record: dict | None, level: str = "###") -> list[str]:
    lines = [f"{level} {e.section}: {e.label}", ""]
    lines += ["```bash", e.command, "```", ""]
    if record is None:
        return lines + [f"*{NOT_RUN}.*", ""]
    if mislabel_records(record):
        extra: dict[str, list[float]] = {}
        for m in mislabel_records(record).values():
            for k, v in m.get("seconds", {}).items():
                extra.setdefault(k, []).append(v)
        after = "".join(f"; then {k} {np.mean(v):.0f} s" for k, v in extra.items())
        return lines + render_mislabel(record) + [f"Wall time: {_wall(record)}{after}.", ""]
    lines.append(
        f"Held-out test runs; {_seeds_line(record)}; wall time: {_wall(record)}; "
        f"from {record.get('source', 'workdir')} of `{record.get('workdir', e.workdir)}`."
    )
    lines.append("")
    for metric, methods in sorted(summarise(record["per_seed"]).items()):
        have = [s for s, rows in record["per_seed"].items() if metric in rows]
        only = ""
        if len(have) < len(record["per_seed"]):
            only = f" (seed(s) {', '.join(have)} only: the others did not record it)"
        lines += [f"**{metric}**{only}", "", method_table(methods)]
        for method in ("gptfluence", KERNEL):
            said = reading(record["per_seed"], metric, method)
            if said:
                lines += [said, ""]
    if record.get("plots"):
        links = ", ".join(f"[{Path(p).name}]({p})" for p in record["plots"])
        lines += [f"Plots (seed {plots_seed(record)}, first test run): {links}", ""]
    return lines


def _seed_wins(per_seed: dict[str, dict], metric: str, a: str, b: str) -> tuple[int, int]:
    """(seeds where ``a``'s all-steps MSE is below ``b``'s, seeds where both have one)."""
    wins = total = 0
    for rows in per_seed.values():
        x = rows.get(metric, {}).get(a, {}).get("mse_mean")
        y = rows.get(metric, {}).get(b, {}).get("mse_mean")
        if _finite([x]) and _finite([y]):
            total += 1
            wins += x < y
    return wins, total


def _wins(per_seed: dict[str, dict], metric: str, a: str, b: str) -> str:
    """ "k of n" of `_seed_wins` ("–" if never both)."""
    wins, total = _seed_wins(per_seed, metric, a, b)
    return f"{wins} of {total}" if total else "–"


def reading(per_seed: dict[str, dict], metric: str, method: str = "gptfluence") -> str:
    """A sentence computed from the seeds: in how many seeds ``method`` has a lower all-steps
    MSE than each of the other main methods (paired by seed)."""
    rivals = ("simfluence", "tracin_cp_all", "grad_dot", "persistence", "mean_trajectory")
    parts = []
    for rival in rivals:
        wins, total = _seed_wins(per_seed, metric, method, rival)
        if total:
            parts.append(f"{METHODS[rival]} in {wins} of {total}")
    if not parts:
        return ""
    return (
        f"{METHODS.get(method, method)} has the lower all-steps MSE (paired by seed) than "
        + ", ".join(parts)
        + " seed(s)."
    )


def first_kernel(per_seed: dict[str, dict], metric: str = "loss") -> bool:
    """Whether any seed's kernel rows come from the first kernel (the base model's projected
    gradients: rows simulated before the row said which kernel, or saying "projected")."""
    for rows in per_seed.values():
        row = rows.get(metric, {}).get(KERNEL)
        if row and "not_applicable" not in row and "projected" in row.get("kernel", "projected"):
            return True
    return False


def summary_table(experiments: list[Experiment], records: dict[str, dict]) -> list[str]:
    """One row per experiment with loss results (ablations aside): the main methods' mean
    all-steps MSE and LDS over seeds, the method with the lowest MSE, and in how many seeds
    the paper's orderings hold (GPTfluence below Simfluence, below TracIn-CP) and whether
    GPTfluence beats the curriculum-blind mean trajectory."""
    metric = "loss"
    head = (
        "| experiment | seeds | GPTfluence MSE | Simfluence MSE | mean traj. MSE | lowest MSE "
        "| GPTf. < Simf. | GPTf. < TracIn-CP | GPTf. < mean traj. | GPTfluence LDS "
        "| TracIn-CP LDS | kernel MSE | kernel < mean traj. "
        "| kernel LDS |"
    )
    lines = [head, "|---" * 14 + "|"]
    for e in experiments:
        record = records.get(e.key)
        if e.section.startswith("Ablation") or not record or "per_seed" not in record:
            continue
        summary = summarise(record["per_seed"]).get(metric)
        if not summary:
            continue

        def mean(method: str, key: str, digits: int, summary=summary) -> str:
            value = summary.get(method, {}).get(key)
            return f"{value[0]:.{digits}f}" if value else "–"

        per_seed = record["per_seed"]
        # The lowest mean among the methods every seed ran: a mean over fewer seeds is not
        # comparable with the others'.
        ranked = [
            (summary[m]["mse_mean"][0], m)
            for m in summary
            if summary[m].get("mse_mean")
            and "not_applicable" not in summary[m]
            and len(summary[m]["seeds"]) == len(per_seed)
        ]
        best = METHODS.get(min(ranked)[1], min(ranked)[1]) if ranked else "–"
        kernel = summary.get(KERNEL, {})
        fewer = " ‡" if "seeds" in kernel and len(kernel["seeds"]) < len(per_seed) else ""
        lines.append(
            f"| {e.section}: {e.label} | {len(per_seed)} | {mean('gptfluence', 'mse_mean', 4)} "
            f"| {mean('simfluence', 'mse_mean', 4)} | {mean('mean_trajectory', 'mse_mean', 4)} "
            f"| {best} | {_wins(per_seed, metric, 'gptfluence', 'simfluence')} "
            f"| {_wins(per_seed, metric, 'gptfluence', 'tracin_cp_all')} "
            f"| {_wins(per_seed, metric, 'gptfluence', 'mean_trajectory')} "
            f"| {mean('gptfluence', 'lds_mean', 3)} | {mean('tracin_cp_all', 'lds_mean', 3)} "
            f"| {mean(KERNEL, 'mse_mean', 4)}{' †' if first_kernel(per_seed, metric) else ''}"
            f"{fewer} "
            f"| {_wins(per_seed, metric, KERNEL, 'mean_trajectory')} "
            f"| {mean(KERNEL, 'lds_mean', 3)} |"
        )
    if len(lines) == 2:
        return []
    return [
        "## Summary: which of the paper's orderings hold here",
        "",
        "Loss, held-out test runs, means over seeds (the sections below give spreads). The "
        "paper reports GPTfluence below Simfluence on every task and, in instruction tuning, "
        "below TracIn-CP and Grad-Dot (with TracIn-CP below Simfluence); it does not report "
        "the mean-trajectory baseline. The "
        "columns `A < B` count the seeds where A's all-steps MSE is the lower. `kernel` is "
        "the GPTfluence recurrence on the mean trajectory driven by a gradient kernel alone "
        "(`gradient_kernel`, [docs/simulator.md](docs/simulator.md)), added after the "
        "paper's methods: the Adam-preconditioned kernel along the training runs' mean path, "
        "or, marked †, the first version (the base model's projected gradients); `–` where "
        "an experiment ran before it existed or saved no parameters to take gradients at "
        "([docs/experiments.md](docs/experiments.md) says which); marked ‡, a mean over "
        "fewer seeds than the experiment's (its section says which) and left out of "
        "`lowest MSE`.",
        "",
        *lines,
        "",
    ]


# The main tables whose seeds the reading pools, per base model.
READING_GROUPS = {
    "small GPT-NeoX (CPU protocol)": ("Fine-tuning", "Instruction tuning"),
    "SmolLM2-135M (partial FT)": ("SmolLM2-135M (real pretrained LM, partial fine-tuning)",),
}


def reading_experiments(
    experiments: list[Experiment], records: dict[str, dict]
) -> dict[str, list[Experiment]]:
    """{base model: its main-table experiments that have results}, whose seeds the reading
    pools."""
    return {
        group: [
            e for e in experiments if e.section in sections and "per_seed" in records.get(e.key, {})
        ]
        for group, sections in READING_GROUPS.items()
    }


def reading_groups(experiments: list[Experiment], records: dict[str, dict]) -> dict[str, list]:
    """{base model: the per_seed records of its main tables}, the pairs the reading pools."""
    return {
        group: [records[e.key]["per_seed"] for e in pooled]
        for group, pooled in reading_experiments(experiments, records).items()
    }


def reading_section(experiments: list[Experiment], records: dict[str, dict]) -> list[str]:
    return orderings.section(reading_groups(experiments, records), METHODS)


def _mean_std(values: list[float], digits: int = 3) -> str:
    """ "m" for one value, "m ± s" (s the std over seeds) for several."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


def _found_at(curve: dict, fraction: float) -> float:
    checked = np.asarray(curve["checked"], np.float64)
    return float(np.interp(fraction, checked, np.asarray(curve["found"], np.float64)))


def render_mislabel(record: dict) -> list[str]:
    per_seed = mislabel_records(record)
    seeds = sorted(per_seed, key=int)
    records = [per_seed[s] for s in seeds]
    first = records[0]
    fractions = first.get("report_fractions", [0.1, 0.2, 0.3, 0.5])
    flipped = sorted({(m.get("flipped_total"), m.get("pool_size")) for m in records})
    flips = "; ".join(f"{f} of {p}" for f, p in flipped)
    lines = [
        f"{len(seeds)} seed(s) ({', '.join(seeds)}), each with its own pool, flipped labels, "
        f"base model and runs; {flips} pool labels flipped. Fraction of the flipped labels "
        "found after checking the given fraction of the pool, most suspicious first"
        + (" (mean ± std over seeds):" if len(seeds) > 1 else ":"),
        "",
        "| ranking | " + " | ".join(f"{f:.0%} checked" for f in fractions) + " |",
        "|---" * (len(fractions) + 1) + "|",
    ]
    names = list(dict.fromkeys(n for m in records for n in m.get("curves", {})))
    for name in names:
        curves = [m["curves"][name] for m in records if name in m.get("curves", {})]
        cells = [_mean_std([_found_at(c, f) for c in curves]) for f in fractions]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    random = next((n for n in names if n.startswith("random")), None)
    if random and len(seeds) > 1:
        lines += _against_random(records, names, random, fractions)
    for m in records[:1]:
        for name, reason in m.get("unavailable", {}).items():
            lines += [f"- {name}: not available ({reason})", ""]
    rows: dict[tuple[str, float], list[float]] = {}
    for m in records:
        for row in m.get("retrain", []):
            rows.setdefault((row["ranking"], row["checked"]), []).append(row["accuracy"])
    if rows:
        lines += ["Test accuracy after fixing the checked labels and retraining:", ""]
        lines += ["| fixed by | checked | test accuracy | seeds |", "|---|---|---|---|"]
        for (ranking, checked), acc in rows.items():
            lines.append(f"| {ranking} | {checked:.0%} | {_mean_std(acc)} | {len(acc)} |")
        lines.append("")
        ends = {r: np.mean(a) for (r, _), a in rows.items()}
        if ends.get("all labels fixed", 1.0) <= ends.get("no fix", 0.0):
            lines += [
                "Fixing every label does not raise the test accuracy here, so this retraining "
                "cannot tell the rankings apart at this scale.",
                "",
            ]
    else:
        lines += ["Retraining after fixing the checked labels: not run yet.", ""]
    for p in record.get("plots", []):
        if Path(p).name.startswith("mislabel"):
            lines += [f"![{Path(p).stem}]({p}) (seed {plots_seed(record)})", ""]
    return lines


def _against_random(records: list[dict], names: list[str], random: str, fractions) -> list[str]:
    """Each ranking minus the random one, paired by seed: the mean difference in the fraction
    found, its std over seeds, and the seeds where the ranking found more."""
    lines = [
        f"Each ranking minus {random}, paired by seed (mean ± std over seeds; k/n: seeds "
        "where the ranking found more):",
        "",
        "| ranking | " + " | ".join(f"{f:.0%} checked" for f in fractions) + " |",
        "|---" * (len(fractions) + 1) + "|",
    ]
    for name in names:
        if name == random:
            continue
        both = [m["curves"] for m in records if name in m["curves"] and random in m["curves"]]
        cells = []
        for f in fractions:
            diff = [_found_at(c[name], f) - _found_at(c[random], f) for c in both]
            cells.append(f"{_mean_std(diff, 3)} ({sum(d > 0 for d in diff)}/{len(diff)})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + [""]


def ablation_table(experiments: list[Experiment], records: dict[str, dict]) -> list[str]:
    """One row per variant: GPTfluence's figures beside the mean trajectory's (loss), and the
    kernel simulator's where the variant has it."""
    lines = [
        "| variant | method | " + " | ".join(h for _, _, h, _ in COLUMNS) + " |",
        "|---|---" + "|---" * len(COLUMNS) + "|",
    ]
    for e in experiments:
        record = records.get(e.key)
        if record is None:
            lines.append(f"| {e.label} | {NOT_RUN} |" + " |" * len(COLUMNS))
            continue
        loss = summarise(record["per_seed"]).get("loss", {})
        for method in ("gptfluence", KERNEL, "mean_trajectory"):
            if method in loss and "not_applicable" not in loss[method]:
                cells = [_cell(loss[method], a, b, d) for a, b, _, d in COLUMNS]
                mark = " †" if method == KERNEL and first_kernel(record["per_seed"]) else ""
                name = METHODS[method] + mark
                lines.append(f"| {e.label} | {name} | " + " | ".join(cells) + " |")
    return lines + [""]


def cost_table(experiments: list[Experiment], records: dict[str, dict]) -> list[str]:
    lines = [
        "| experiment | seeds | prepare (s) | collect (s) | simulate (s) | baselines (s) |",
        "|---|---|---|---|---|---|",
    ]
    marked = False  # a row marked ¶ needs the footnote
    for e in experiments:
        record = records.get(e.key)
        if not record or not record.get("stage_seconds"):
            continue
        seconds = record["stage_seconds"]
        cells = []
        for stage in ("prepare", "collect", "simulate", "baselines"):
            v = _finite(t.get(stage) for t in seconds.values())
            cells.append(f"{np.mean(v):.0f}" if v else "–")
        mixed = bool(fewer_methods(record))
        marked |= mixed
        lines.append(
            f"| {e.section}: {e.label}{' ¶' if mixed else ''} | {len(seconds)} | "
            + " | ".join(cells)
            + " |"
        )
    if marked:
        lines += [
            "",
            "¶ Its seeds ran different method sets (the experiment's wall-time line names "
            "them): the simulate and baselines means mix seeds that ran the gradient methods "
            "with seeds that did not.",
        ]
    return lines + [""]


def method_seconds_table(experiments: list[Experiment], records: dict[str, dict]) -> list[str]:
    """Seconds each method took where its results row records them (mean over seeds; the
    gradient baselines' per-sample cost on the held-out runs, loss)."""
    cells: dict[str, dict[str, float]] = {}
    for e in experiments:
        record = records.get(e.key)
        for rows in (record or {}).get("per_seed", {}).values():
            for method, row in rows.get("loss", {}).items():
                v = _finite([row.get("seconds")])
                if v:
                    cells.setdefault(f"{e.section}: {e.label}", {}).setdefault(method, [])
                    cells[f"{e.section}: {e.label}"][method].append(v[0])
    methods = _ordered({m for per in cells.values() for m in per})
    if not methods:
        return []
    lines = [
        "Seconds per method (loss; mean over seeds) where the results record them:",
        "",
        "| experiment | " + " | ".join(METHODS.get(m, m) for m in methods) + " |",
        "|---" * (len(methods) + 1) + "|",
    ]
    for name, per in cells.items():
        parts = [f"{np.mean(per[m]):.1f}" if m in per else "–" for m in methods]
        lines.append(f"| {name} | " + " | ".join(parts) + " |")
    return lines + [""]


# Per-sample simulation cost (the paper's Table 5): records written by experiments/cost.py.
COST_GLOB = "cost*.json"
COST_COMMAND = (
    "python -m experiments.cost --workdir workdirs/finetune_sst2/seed_0 "
    "--out experiments/results/cost_sst2.json"
)
NOT_MEASURED = "not measured yet"


def fmt_flops(v: float | None) -> str:
    return "–" if v is None else f"{v:.3g}"


def fmt_seconds(v: float | None) -> str:
    if v is None:
        return "–"
    if v >= 1.0:
        return f"{v:.3g} s"
    if v >= 1e-3:
        return f"{v * 1e3:.3g} ms"
    return f"{v * 1e6:.3g} µs"


def simulation_cost_table(record: dict[str, Any]) -> list[str]:
    """One row per method of an ``experiments.cost`` record: FLOPs and latency for one test
    example's trajectory, alone and amortised over the workdir's test examples."""
    n = record["test_examples"]
    lines = [
        f"| method | FLOPs / sample | latency / sample | FLOPs / sample, {n} at once | "
        f"latency / sample, {n} at once | needs the run trained |",
        "|---|---|---|---|---|---|",
    ]
    for row in record["methods"]:
        if "unavailable" in row:
            lines.append(f"| {row['label']} | not available: {row['unavailable']} | | | | |")
            continue
        one, many = row["single"], row["amortised"]
        lines.append(
            f"| {row['label']} | {fmt_flops(one['flops'])} | {fmt_seconds(one['latency_s'])} | "
            f"{fmt_flops(many['flops'])} | {fmt_seconds(many['latency_s'])} | "
            f"{'yes' if row.get('needs_trained_run') else 'no'} |"
        )
    return lines


def simulation_cost_section(repo: Path, snapshots: Path) -> list[str]:
    """The per-sample cost tables from ``experiments/results/cost*.json``, or the command
    that measures them."""
    lines = ["### Per-sample simulation cost (Table 5)", ""]
    files = sorted((repo / snapshots).glob(COST_GLOB))
    if not files:
        return lines + [
            f"Per-sample simulation latency and FLOPs of each method: *{NOT_MEASURED}*. "
            "Measure them on a finished workdir with",
            "",
            "```bash",
            COST_COMMAND,
            "```",
            "",
        ]
    lines += [
        "What it takes to predict one test example's whole trajectory for one new curriculum "
        "(a held-out test run): for one test example alone, and per test example when all of "
        "the workdir's test examples are predicted at once (shared work paid once). FLOPs from "
        "XLA's cost analysis of the compiled functions (scan bodies counted once per step); "
        "latency: the median wall time after a warm-up call (compilation excluded). "
        "GPTfluence reads its cached MiniLM features (features excluded) unless the row says "
        "features included (the encoder on the test example and the run's training examples). "
        "The gradient methods need the run's own checkpoints, i.e. the run trained first. "
        "How it is measured: [docs/experiments.md](docs/experiments.md).",
        "",
    ]
    for path in files:
        record = io.read_json(path)
        rel = (snapshots / path.name).as_posix()
        lines += [
            f"`{rel}`: `{record['workdir']}`, run {record['run']} ({record['steps']} steps of "
            f"batch {record['batch_size']}, {record['distinct_train_examples']} distinct "
            f"training examples), {record['test_examples']} test examples, metric "
            f"{record['metric']}; {record['device']}, {record.get('cpu_count')} CPU core(s); "
            f"median of {record['repeats']} calls.",
            "",
            *simulation_cost_table(record),
            "",
        ]
        scaled = [r for r in record["methods"] if r.get("flops_by_steps")]
        if scaled:
            horizons = " / ".join(str(h["steps"]) for h in scaled[0]["flops_by_steps"])
            scaling = "; ".join(
                f"{r['label']} " + " / ".join(fmt_flops(h["flops"]) for h in r["flops_by_steps"])
                for r in scaled
            )
            lines += [
                f"Rollout FLOPs for one sample at {horizons} steps (the run, then the run "
                f"twice): {scaling}.",
                "",
            ]
        for row in record["methods"]:
            if row.get("note"):
                lines += [f"{row['label']}: {row['note']}.", ""]
        c = record.get("collection")
        if c:
            per_step, per_run = (
                fmt_seconds(c[k]) for k in ("seconds_per_run_step", "seconds_per_run")
            )
            lines += [
                f"Collecting the runs behind every method: {per_step} per run-step ({per_run} "
                f"per run of {record['steps']} steps; {c['run_steps']} run-steps in "
                f"{c['groups']} run group(s), from "
                "`runs/run_*.timing.json`: compilation and checkpoint writes included).",
                "",
            ]
        else:
            lines += ["Collection cost: no run timing files in the workdir.", ""]
        if record.get("command"):
            lines += ["```bash", record["command"], "```", ""]
    return lines


HEADER = """# Experiments (issue #14)

<!-- Generated by `python -m experiments.report` from experiments/results/*.json, which it
harvests from the experiments' workdirs. Do not edit by hand: edit experiments/report.py or
run the experiments, then run the script again. -->

Every figure below comes from a config in `configs/` and the command shown with it; the
numbers are read from the results JSON files of the workdir that command writes (snapshots
in `experiments/results/`). What the protocol is, how the small base model was trained and
how to read each table: [docs/experiments.md](docs/experiments.md).

A table cell is `m (s) ± d`: m the mean over seeds of the seed's figure on its held-out test
runs, s the mean over seeds of that figure's spread (the paper's "(std)": over trajectories
for MSE / MAE, over test runs for the final-step ρ, over test examples for the LDS), d the
standard deviation over seeds. Rows without `± d` come from one seed. The LDS column shows
the across-run ρ for results recorded before the LDS had its own key.

The paper's figures for comparison (GPTfluence, Chai et al. 2024, Pythia-410M, loss;
all-steps MSE / final-step ρ): instruction tuning, mean of 5 tasks — Simfluence 0.770 / 0.779,
GPTfluence 0.093 / 0.860, TracIn-CP 0.413 / 0.421, Grad-Dot 6.479 / 0.421; fine-tuning —
Simfluence 0.026 / 0.931, GPTfluence 0.015 / 0.933.
"""


def load_records(repo: Path, experiments: list[Experiment], snapshots: Path) -> dict[str, dict]:
    records = {}
    for e in experiments:
        path = repo / snapshots / f"{e.key}.json"
        if path.is_file():
            records[e.key] = io.read_json(path)
    return records


def _curve_path(snapshots: Path, members: list[Experiment]) -> Path:
    """Where an ablation's curve lives: beside its variants' snapshots."""
    return snapshots / members[0].key.split("/")[0] / figures.CURVE_NAME


def write_ablation_curves(repo: Path, experiments: list[Experiment], snapshots: Path) -> None:
    """One PNG per ablation with results: GPTfluence, the kernel simulator and the mean
    trajectory's all-steps MSE (mean ± std over seeds) against the ablated setting."""
    records = load_records(repo, experiments, snapshots)
    families: dict[str, list[Experiment]] = {}
    for e in experiments:
        if e.section.startswith("Ablation"):
            families.setdefault(e.section, []).append(e)
    for section, members in families.items():
        if not any(e.key in records for e in members):
            continue
        series: dict[str, list[figures.Point]] = {}
        for method in ("gptfluence", KERNEL, "mean_trajectory"):
            points: list[figures.Point] = []
            for e in members:
                loss = (
                    summarise(records[e.key]["per_seed"]).get("loss", {})
                    if e.key in records
                    else {}
                )
                mse = loss.get(method, {}).get("mse_mean")
                points.append((mse[0], mse[1]) if mse else None)
            series[METHODS[method]] = points
        title = section.removeprefix("Ablation: ")
        figures.ablation_curve(
            repo / _curve_path(snapshots, members), title, [e.label for e in members], series
        )


def render(repo: Path, experiments: list[Experiment], snapshots: Path) -> str:
    records = load_records(repo, experiments, snapshots)
    lines = [HEADER]
    sections: dict[str, list[Experiment]] = {}
    for e in experiments:
        sections.setdefault(e.section, []).append(e)
    ran = sum(1 for e in experiments if e.key in records)
    lines += [
        f"{ran} of {len(experiments)} experiments have results; the others are listed with "
        f"the command that runs them.",
        "",
    ]
    lines += summary_table(experiments, records)
    lines += reading_section(experiments, records)
    for section, members in sections.items():
        lines += [f"## {section}", ""]
        if section.startswith("Ablation"):
            lines += [
                "GPTfluence beside the mean trajectory (and the kernel simulator where the "
                "variant has it; † the first kernel, see the summary), loss:",
                "",
            ]
            lines += ablation_table(members, records)
            if any(e.key in records for e in members):
                curve = _curve_path(snapshots, members).as_posix()
                lines += [f"![ablation curve]({curve}) (bars: std over seeds)", ""]
        waiting = []
        for e in members:
            if section.startswith("Ablation") and e.key not in records:
                waiting.append(e.command)
            else:
                lines += render_experiment(e, records.get(e.key))
            if e.key == PAPER_SCALE:
                lines += paper_scale_lines(repo)
        if waiting:
            lines += [f"Variants {NOT_RUN}:", "", "```bash", *waiting, "```", ""]
    lines += ["## Cost", ""]
    lines += [
        "Stage wall times of the experiments that ran (mean over seeds; 2 shared CPU cores "
        "unless said otherwise; each experiment's line says whether its stage times sum "
        "every invocation or, for workdirs written before that was kept, count the last; "
        "docs/experiments.md gives the seeds that were resumed or shared the machine).",
        "",
    ]
    lines += cost_table(experiments, records)
    lines += method_seconds_table(experiments, records)
    lines += simulation_cost_section(repo, snapshots)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", default=str(REPO), help="repository root (workdirs relative)")
    parser.add_argument("--out", default=None, help="EXPERIMENTS.md path (default: repo's)")
    parser.add_argument("--no-harvest", action="store_true", help="render the snapshots only")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    repo = Path(args.repo)
    out = Path(args.out) if args.out else repo / OUT
    experiments = EXPERIMENTS + discovered(repo, EXPERIMENTS)
    if args.check:
        text = render(repo, experiments, SNAPSHOTS)
        current = out.read_text() if out.is_file() else ""
        if current != text:
            print(f"{out} is out of date: run python -m experiments.report", file=sys.stderr)
            return 1
        return 0
    if not args.no_harvest:
        done = harvest(repo, experiments, SNAPSHOTS)
        print(f"harvested {len(done)} experiment(s): {', '.join(done) or 'none'}")
    write_ablation_curves(repo, experiments, SNAPSHOTS)
    io.atomic_write_text(out, render(repo, experiments, SNAPSHOTS))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
