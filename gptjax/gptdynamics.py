"""Import and export the published GPTDynamics layout, so the authors' released runs can be
used directly and ours can be shared in the same form.

Per run, a folder with
  train_samples_id.json          JSON lines {"step": s, "samples_id": [pool ids]}, s = 1..T:
                                 the batch of training step s (our curriculum[s-1]).
  all_<metric>_trajectory.out    JSON lines {"id": n, "loss_trajectory": [{"step": s,
                                 "loss": v}, ...]} for every test example n (the value is
                                 under "loss" whatever the metric is, as published).

Trajectory steps also start at 1. We write T+1 values, s = 1..T+1, where step s holds the
value after s-1 training steps (s = 1 is before training), so nothing is lost and the round
trip is exact. On import, a trajectory of T+1 values is read that way; one of only T values
is taken as the values after steps 1..T, and the missing pre-training value is recorded as
NaN (simulators then start from the first observed step).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from gptjax.io import atomic_write_bytes
from gptjax.store import Dynamics, RunRecord, stack_runs

SAMPLES_FILE = "train_samples_id.json"


def _trajectory_file(folder: Path, metric: str) -> Path:
    return folder / f"all_{metric}_trajectory.out"


def export_run(folder: str | os.PathLike, curriculum: np.ndarray, metrics: dict) -> Path:
    folder = Path(folder)
    lines = [
        json.dumps({"step": s + 1, "samples_id": [int(i) for i in batch]})
        for s, batch in enumerate(np.asarray(curriculum))
    ]
    atomic_write_bytes(folder / SAMPLES_FILE, ("\n".join(lines) + "\n").encode())
    for name, y in metrics.items():
        y = np.asarray(y, np.float32)  # [T+1, N]
        rows = []
        for n in range(y.shape[1]):
            # float(np.float32) is exact in float64, and JSON round-trips float64 exactly.
            traj = [{"step": t + 1, "loss": float(y[t, n])} for t in range(y.shape[0])]
            rows.append(json.dumps({"id": n, "loss_trajectory": traj}))
        atomic_write_bytes(_trajectory_file(folder, name), ("\n".join(rows) + "\n").encode())
    return folder


def export_dynamics(dyn: Dynamics, out_dir: str | os.PathLike) -> Path:
    """One folder per run, run_<k>/, in the GPTDynamics layout."""
    out_dir = Path(out_dir)
    for k in range(dyn.num_runs):
        run_metrics = {name: y[k] for name, y in dyn.metrics.items()}
        export_run(out_dir / f"run_{k}", dyn.curricula[k], run_metrics)
    return out_dir


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {lineno}: not valid JSON ({err.msg})") from None
    return rows


def import_run(folder: str | os.PathLike) -> RunRecord:
    folder = Path(folder)
    samples = folder / SAMPLES_FILE
    if not samples.is_file():
        raise FileNotFoundError(
            f"{samples} not found (expected the GPTDynamics layout: JSON lines "
            '{"step": s, "samples_id": [...]})'
        )
    rows = sorted(_read_jsonl(samples), key=lambda r: r["step"])
    curriculum = np.array([r["samples_id"] for r in rows], np.int32)
    num_steps = len(rows)
    metrics = {}
    for path in sorted(folder.glob("all_*_trajectory.out")):
        name = path.name[len("all_") : -len("_trajectory.out")]
        entries = sorted(_read_jsonl(path), key=lambda r: r["id"])
        ids = [e["id"] for e in entries]
        if ids != list(range(len(ids))):
            raise ValueError(f"{path}: test ids are not 0..N-1")
        y = np.full((num_steps + 1, len(entries)), np.nan, np.float32)
        for e in entries:
            traj = sorted(e["loss_trajectory"], key=lambda p: p["step"])
            values = np.array([p["loss"] for p in traj], np.float32)
            if len(values) == num_steps + 1:
                y[:, e["id"]] = values
            elif len(values) == num_steps:
                y[1:, e["id"]] = values
            else:
                raise ValueError(
                    f"{path}: test example {e['id']} has {len(values)} values; "
                    f"{num_steps} training steps need {num_steps} or {num_steps + 1}"
                )
        metrics[name] = y
    if not metrics:
        raise FileNotFoundError(f"{folder}: no all_<metric>_trajectory.out files")
    return RunRecord(
        curriculum=curriculum,
        subset=np.unique(curriculum).astype(np.int32),
        lr=np.full(num_steps, np.nan, np.float32),
        train_loss=np.full(num_steps, np.nan, np.float32),
        metrics=metrics,
        meta={"status": "ok", "source": f"gptdynamics:{folder}"},
    )


def import_dynamics(root: str | os.PathLike) -> Dynamics:
    """Every run folder under root (sorted by the number in its name), stacked."""
    root = Path(root)
    folders = [p for p in root.iterdir() if (p / SAMPLES_FILE).is_file()] if root.is_dir() else []
    if not folders:
        raise FileNotFoundError(f"no GPTDynamics run folders (with {SAMPLES_FILE}) under {root}")

    def order(p: Path):
        digits = "".join(c for c in p.name if c.isdigit())
        return (int(digits) if digits else -1, p.name)

    return stack_runs([import_run(p) for p in sorted(folders, key=order)])
