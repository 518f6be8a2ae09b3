"""The workdir layout: the one place that knows where each artifact of an experiment lives.

Everything below the pipeline receives resolved paths (or a `RunStore`) from here::

    .lock                        held by the process writing the workdir (pipeline.lock)
    config.json                  the resolved config, written once preparation succeeded
    model/                       the base model (Orbax params + config.json)
    data/pools.json              the pools and test set as rendered (ids, texts, labels)
    data/relatedness.npy         ground-truth relatedness (demo task only)
    runs/                        the dynamics store (see gptjax.store.RunStore)
    features.<hash>.npy          cached encoder features of pool and test texts
    simulators/<metric>/<name>/  fitted simulators (Orbax + meta.json + fit_key.json)
    results/                     tables (.md, .csv), plots (.png), numbers (.json), report.md
"""

from __future__ import annotations

import os
from pathlib import Path

from gptjax.store import RunStore

# Orbax merges per-process checkpoint files by glob pattern: under a path with a glob
# character it writes a checkpoint without its manifest, which can never be read back.
_GLOB_CHARACTERS = "[]*?"


class Workdir:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        bad = sorted({c for c in str(self.root.absolute()) if c in _GLOB_CHARACTERS})
        if bad:
            raise ValueError(
                f"workdir {self.root}: its path contains {' '.join(bad)}, under which Orbax "
                "writes checkpoints it cannot read back; choose a path without [ ] * ?"
            )
        self.runs = RunStore(self.root / "runs")

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    @property
    def config_file(self) -> Path:
        return self.root / "config.json"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def pools_file(self) -> Path:
        return self.root / "data" / "pools.json"

    @property
    def relatedness_file(self) -> Path:
        return self.root / "data" / "relatedness.npy"

    @property
    def features_prefix(self) -> Path:
        """Prefix of the feature caches (``features.<hash>.npy``)."""
        return self.root / "features"

    def simulator_dir(self, metric: str, name: str) -> Path:
        return self.root / "simulators" / metric / name

    @property
    def results_dir(self) -> Path:
        return self.root / "results"

    def result(self, name: str) -> Path:
        return self.results_dir / name

    @property
    def report_file(self) -> Path:
        return self.result("report.md")
