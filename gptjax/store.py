"""The dynamics store: what collection produced, one atomic file per run.

A `RunStore` is a folder (the pipeline puts it at ``<workdir>/runs``) that holds::

    run_00003.npz           curriculum int32 [T, B], subset, lr float32 [T], train_loss [T],
                            one float32 [T+1, N] array per metric ("metric/<name>"), and
                            "meta" (JSON: seed, status, hyper-parameters, model); written to
                            a temporary file and renamed, so a reader sees a whole run or none.
    run_00003.timing.json   wall time and throughput (kept apart: not deterministic)
    checkpoints/run_00003/  Orbax checkpoints of the run's parameters (for TracIn)
    checkpoints/run_00003.sha256.json   a digest of each saved step's folder, written once
                            the checkpoints are complete; a run whose checkpoints are
                            missing or differ from it is damaged

`RunStore.load` stacks runs into a `Dynamics`, the input of every simulator and baseline:
curricula [K, T, B], metrics {name: [K, T+1, N]}, lr [K, T], valid [K].
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from gptjax.io import atomic_write_bytes, atomic_write_json, read_json, tree_digest

_RUN_FILE = re.compile(r"run_(\d{5})\.npz")


@dataclasses.dataclass
class RunRecord:
    curriculum: np.ndarray  # int32 [T, B]
    subset: np.ndarray  # int32 [S]
    lr: np.ndarray  # float32 [T]
    train_loss: np.ndarray  # float32 [T]
    metrics: dict[str, np.ndarray]  # name -> float32 [T+1, N]
    meta: dict[str, Any]
    # <grad batch loss, grad test loss_n> before each step (collect.tracin_dots) [T, N]
    tracin_dots: np.ndarray | None = None

    @property
    def valid(self) -> bool:
        return self.meta.get("status", "ok") == "ok"


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
    tracin_dots: np.ndarray | None = None  # float32 [K, T, N] when every run recorded them

    @property
    def num_runs(self) -> int:
        return self.curricula.shape[0]


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
        tracin_dots=(
            np.stack([r.tracin_dots for r in records])
            if all(r.tracin_dots is not None for r in records)
            else None
        ),
    )


def encode_run(record: RunRecord) -> bytes:
    """The bytes of a run file (zip entries carry a fixed date: same arrays, same bytes)."""
    arrays = {
        "curriculum": np.asarray(record.curriculum, np.int32),
        "subset": np.asarray(record.subset, np.int32),
        "lr": np.asarray(record.lr, np.float32),
        "train_loss": np.asarray(record.train_loss, np.float32),
        "meta": np.frombuffer(json.dumps(record.meta, sort_keys=True).encode(), np.uint8),
    }
    for name, values in record.metrics.items():
        arrays[f"metric/{name}"] = np.asarray(values, np.float32)
    if record.tracin_dots is not None:
        arrays["tracin_dots"] = np.asarray(record.tracin_dots, np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def decode_run(path: str | os.PathLike) -> RunRecord:
    """Read a run file; a damaged one is a ValueError naming it."""
    path = Path(path)
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
                tracin_dots=z["tracin_dots"] if "tracin_dots" in z.files else None,
            )
    except Exception as err:  # OSError, ValueError, KeyError, zipfile.BadZipFile, ...
        raise ValueError(f"{path}: not a readable run file ({err})") from err


class RunStore:
    """The runs of one collection, in one folder (see the module docstring)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def run_file(self, run: int) -> Path:
        return self.root / f"run_{run:05d}.npz"

    def timing_file(self, run: int) -> Path:
        return self.root / f"run_{run:05d}.timing.json"

    def checkpoint_dir(self, run: int) -> Path:
        return self.root / "checkpoints" / f"run_{run:05d}"

    def checkpoint_digest_file(self, run: int) -> Path:
        return self.root / "checkpoints" / f"run_{run:05d}.sha256.json"

    def record_checkpoints(self, run: int, steps: list[int]) -> None:
        """Write the digest of each saved step's folder (call once they are complete)."""
        folder = self.checkpoint_dir(run)
        digests = {str(s): tree_digest(folder / str(s)) for s in steps}
        atomic_write_json(self.checkpoint_digest_file(run), digests)

    def checkpoint_problem(self, run: int, steps: list[int]) -> str | None:
        """Why the checkpoints of ``steps`` of ``run`` cannot be trusted, or None."""
        if not steps:
            return None
        folder, digest_file = self.checkpoint_dir(run), self.checkpoint_digest_file(run)
        missing = [s for s in steps if not (folder / str(s)).is_dir()]
        if missing:
            return f"{folder}: the checkpoints of steps {missing[:5]} are missing"
        if not digest_file.is_file():
            return f"{digest_file} is missing (checkpoints of run {run} unverifiable)"
        try:
            recorded = read_json(digest_file)
        except ValueError as err:
            return str(err)
        for s in steps:
            if recorded.get(str(s)) != tree_digest(folder / str(s)):
                return f"{folder / str(s)}: the checkpoint differs from when it was written"
        return None

    def completed(self) -> set[int]:
        """Indices of the runs on disk (files named exactly run_NNNNN.npz)."""
        if not self.root.is_dir():
            return set()
        found = (_RUN_FILE.fullmatch(p.name) for p in self.root.iterdir())
        return {int(m.group(1)) for m in found if m}

    def write(self, run: int, record: RunRecord) -> Path:
        path = self.run_file(run)
        atomic_write_bytes(path, encode_run(record))
        return path

    def write_timing(self, run: int, timing: dict[str, Any]) -> None:
        atomic_write_json(self.timing_file(run), timing)

    def read(self, run: int, expect: dict[str, Any] | None = None) -> RunRecord:
        """Run ``run``; a damaged file, or one that holds another run (its meta records
        ``run``) or differs from ``expect`` in a meta field, is a ValueError naming it. An
        ``expect`` value that is a tuple lists every accepted value."""
        path = self.run_file(run)
        if not path.is_file():
            raise FileNotFoundError(f"run {run} has not been collected: {path} does not exist")
        record = decode_run(path)
        if record.meta.get("run", run) != run:
            raise ValueError(f"{path}: holds run {record.meta['run']}, not run {run}")
        for key, value in (expect or {}).items():
            accepted = value if isinstance(value, tuple) else (value,)
            if record.meta.get(key) not in accepted:
                raise ValueError(
                    f"{path}: {key} is {record.meta.get(key)!r}, expected {value!r} "
                    "(a run collected with another config or data)"
                )
        return record

    def verified(
        self, expect: dict[str, Any] | None = None, runs: list[int] | None = None
    ) -> tuple[set[int], dict[int, str]]:
        """(runs whose files, and parameter checkpoints, read back whole and as expected;
        {run: why} for the others), among ``runs`` (default: every run on disk)."""
        good, bad = set(), {}
        on_disk = self.completed()
        for run in sorted(on_disk if runs is None else on_disk & set(runs)):
            try:
                record = self.read(run, expect)
            except ValueError as err:
                bad[run] = str(err)
                continue
            problem = self.checkpoint_problem(run, list(record.meta.get("saved_steps", [])))
            if problem:
                bad[run] = problem
            else:
                good.add(run)
        return good, bad

    def load(self, num_runs: int | None = None, expect: dict[str, Any] | None = None) -> Dynamics:
        """Stack runs 0..K-1 (all must be there; K defaults to every run on disk), each
        checked as `read` checks it."""
        done = self.completed()
        if num_runs is None:
            num_runs = max(done) + 1 if done else 0
        missing = sorted(set(range(num_runs)) - done)
        if missing or num_runs == 0:
            raise FileNotFoundError(
                f"{self.root}: runs {missing[:10] or 'all'} are missing; "
                "run the collect stage first"
            )
        return stack_runs([self.read(k, expect) for k in range(num_runs)])
