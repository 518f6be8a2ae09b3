"""The dynamics store: what collection produced, one atomic file per run.

Layout under a workdir::

    runs/run_00003.npz          curriculum int32 [T, B], subset, lr float32 [T],
                                train_loss [T], one float32 [T+1, N] array per metric
                                (name "metric/<name>"), and "meta" (JSON: seed, status,
                                hyper-parameters, model); written to a temporary file and
                                renamed, so a reader sees a whole run or none of it.
    runs/run_00003.timing.json  wall time and throughput (kept apart: not deterministic)
    runs/checkpoints/run_00003/ Orbax checkpoints of the run's parameters (TracIn)

`load_dynamics` stacks the runs into the arrays the simulators and baselines consume:
curricula [K, T, B], metrics {name: [K, T+1, N]}, lr [K, T], valid [K].
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

RUNS_DIR = "runs"
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def run_file(workdir: str | os.PathLike, run: int) -> Path:
    return Path(workdir) / RUNS_DIR / f"run_{run:05d}.npz"


def checkpoint_dir(workdir: str | os.PathLike, run: int) -> Path:
    return Path(workdir) / RUNS_DIR / "checkpoints" / f"run_{run:05d}"


@dataclasses.dataclass
class RunRecord:
    curriculum: np.ndarray  # int32 [T, B]
    subset: np.ndarray  # int32 [S]
    lr: np.ndarray  # float32 [T]
    train_loss: np.ndarray  # float32 [T]
    metrics: dict[str, np.ndarray]  # name -> float32 [T+1, N]
    meta: dict[str, Any]

    @property
    def valid(self) -> bool:
        return self.meta.get("status", "ok") == "ok"


def write_run(workdir: str | os.PathLike, run: int, record: RunRecord) -> Path:
    arrays = {
        "curriculum": np.asarray(record.curriculum, np.int32),
        "subset": np.asarray(record.subset, np.int32),
        "lr": np.asarray(record.lr, np.float32),
        "train_loss": np.asarray(record.train_loss, np.float32),
        "meta": np.frombuffer(json.dumps(record.meta, sort_keys=True).encode(), np.uint8),
    }
    for name, values in record.metrics.items():
        arrays[f"metric/{name}"] = np.asarray(values, np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # zip entries carry a fixed date: same arrays, same bytes
    path = run_file(workdir, run)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def read_run(workdir: str | os.PathLike, run: int) -> RunRecord:
    path = run_file(workdir, run)
    if not path.is_file():
        raise FileNotFoundError(f"run {run} has not been collected: {path} does not exist")
    try:
        with np.load(path) as z:
            metrics = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("metric/")}
            return RunRecord(
                curriculum=z["curriculum"],
                subset=z["subset"],
                lr=z["lr"],
                train_loss=z["train_loss"],
                metrics=metrics,
                meta=json.loads(z["meta"].tobytes().decode()),
            )
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"{path}: not a readable run file ({err})") from err


def completed_runs(workdir: str | os.PathLike) -> set[int]:
    folder = Path(workdir) / RUNS_DIR
    if not folder.is_dir():
        return set()
    return {int(p.stem.split("_")[1]) for p in folder.glob("run_*.npz")}


@dataclasses.dataclass
class Dynamics:
    """Stacked runs; the input of every simulator and baseline."""

    curricula: np.ndarray  # int32 [K, T, B]
    metrics: dict[str, np.ndarray]  # name -> float32 [K, T+1, N]
    lr: np.ndarray  # float32 [K, T]
    train_loss: np.ndarray  # float32 [K, T]
    valid: np.ndarray  # bool [K]
    subsets: list[np.ndarray]
    meta: list[dict[str, Any]]

    @property
    def num_runs(self) -> int:
        return self.curricula.shape[0]

    def as_dict(self) -> dict[str, Any]:
        return {
            "curricula": self.curricula,
            "metrics": self.metrics,
            "lr": self.lr,
            "valid": self.valid,
            "train_loss": self.train_loss,
        }


def stack_runs(records: list[RunRecord]) -> Dynamics:
    if not records:
        raise ValueError("no runs to stack")
    names = sorted(records[0].metrics)
    for i, r in enumerate(records):
        if sorted(r.metrics) != names:
            raise ValueError(f"run {i} has metrics {sorted(r.metrics)}, run 0 has {names}")
    return Dynamics(
        curricula=np.stack([r.curriculum for r in records]),
        metrics={n: np.stack([r.metrics[n] for r in records]) for n in names},
        lr=np.stack([r.lr for r in records]),
        train_loss=np.stack([r.train_loss for r in records]),
        valid=np.array([r.valid for r in records]),
        subsets=[r.subset for r in records],
        meta=[r.meta for r in records],
    )


def load_dynamics(workdir: str | os.PathLike, num_runs: int | None = None) -> Dynamics:
    """Stack runs 0..K-1 (all of them must be there; K defaults to every run on disk)."""
    done = completed_runs(workdir)
    if num_runs is None:
        num_runs = max(done) + 1 if done else 0
    missing = sorted(set(range(num_runs)) - done)
    if missing or num_runs == 0:
        raise FileNotFoundError(
            f"{Path(workdir) / RUNS_DIR}: runs {missing[:10] or 'all'} are missing; "
            "run the collect stage first"
        )
    return stack_runs([read_run(workdir, k) for k in range(num_runs)])
