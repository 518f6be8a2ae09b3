"""Import and export the GPTDynamics layout of the GPTfluence authors, so their released runs
can be used directly and ours can be read by their code unchanged.

A run is a folder (any name; theirs are ``output_<task>_bs-4_..._seed-<k>``) holding

  train_samples_id.json        JSON lines {"step": s, "samples_id": [train ids]}, s = 1..T:
                               the batch of training step s (our ``curriculum[s-1]``).
  all_<metric>_trajectory.out  JSON lines {"id": n, "loss_trajectory": [{"step": s, "loss":
                               v}, ...]}, one per test example n, s = 1..T: the value AFTER s
                               training steps (our ``y[s, n]``). The value is under "loss"
                               whatever the metric is (bleu, rougeL, ...), as they publish it.

Their reader pairs trajectory point s with the batch of step s (``train_samples_id[s]``):
the step from s-1 to s is made with that batch. There is no value before training in their
layout; we keep ours in files their reader never opens (it opens only the two names above):

  pretrain_<metric>.json       JSON lines {"id": n, "step": 0, "loss": v}: y[0, n], the value
                               before the first step.
  gptjax_run.json              one JSON object: "format", "lr" [T], "train_loss" [T],
                               "subset", "meta" (status, seed, ...).

A folder without them imports with the pre-training value NaN (simulators then start from
the first observed step), lr and train loss NaN, and status "ok".

Numbers are written as Python's ``json`` writes floats (shortest repr, exact for float32);
a NaN is the bare token ``NaN`` (what ``json.dumps`` writes and ``json.loads`` reads, also in
their converter scripts); ``null``, strings and ``Infinity`` are refused.

Id -> text files (their ``BaseDataset``): JSON lines {"id": i, "input": text} (+ "context",
the text without its target, for their TracIn-CP dataset), one file for the training pool
and one for the test examples; `export_texts` writes them.

The instruction-tuning mixture: one run evaluates several sub-tasks whose test ids were
shifted into one id space (sst2 0.., rte 200.., boolq 477.., webnlg 677.., wmt16_de_en 855..,
1055 in all); generation metrics (bleu, rougeL) exist only for the generation sub-tasks.
`import_dynamics(..., mixture=FLAN_MIXTURE)` checks each metric file against the id ranges
of the sub-tasks that report it and leaves the other test examples NaN.

Import refuses, naming the file and the line, what it cannot represent faithfully.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gptjax.io import atomic_write_text
from gptjax.store import Dynamics, RunRecord, stack_runs

SAMPLES_FILE = "train_samples_id.json"
RUN_FILE = "gptjax_run.json"
FORMAT = "gptjax-gptdynamics/1"

_METRIC_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_TRAJECTORY = re.compile(r"all_(.+)_trajectory\.out")
_PRETRAIN = re.compile(r"pretrain_(.+)\.json")
_OUR_RUN = re.compile(r"run_(\d+)")
_INT32_MAX = 2**31 - 1


def trajectory_file(folder: str | os.PathLike, metric: str) -> Path:
    return Path(folder) / f"all_{metric}_trajectory.out"


def pretrain_file(folder: str | os.PathLike, metric: str) -> Path:
    return Path(folder) / f"pretrain_{metric}.json"


# ----------------------------------------------------------------------------- mixture


@dataclasses.dataclass(frozen=True)
class SubTask:
    """One task of an instruction-tuning mixture: its test ids are
    ``test_offset .. test_offset + num_test - 1`` in the mixture's id space."""

    name: str
    test_offset: int
    num_test: int
    metrics: tuple[str, ...] = ("loss",)

    @property
    def test_ids(self) -> range:
        return range(self.test_offset, self.test_offset + self.num_test)


@dataclasses.dataclass(frozen=True)
class Mixture:
    """Sub-tasks in one test-id space of ``num_test`` ids (default: the end of the last one);
    ``num_train``, when known, is the size of the mixture's training pool."""

    subtasks: tuple[SubTask, ...]
    num_test: int | None = None
    num_train: int | None = None

    def __post_init__(self):
        if not self.subtasks:
            raise ValueError("a mixture needs at least one sub-task")
        spans = sorted((s.test_offset, s.test_offset + s.num_test, s.name) for s in self.subtasks)
        for (_, end, name), (start, _, other) in zip(spans, spans[1:], strict=False):
            if start < end:
                raise ValueError(f"mixture: test ids of {name} and {other} overlap")
        if spans[0][0] < 0 or any(s.num_test < 1 for s in self.subtasks):
            raise ValueError("mixture: offsets must be >= 0 and sizes >= 1")
        if self.num_test is None:
            object.__setattr__(self, "num_test", spans[-1][1])
        elif self.num_test < spans[-1][1]:
            raise ValueError(f"mixture: num_test {self.num_test} < last test id {spans[-1][1] - 1}")

    def select(self, *names: str) -> Mixture:
        """The same id space with only the named sub-tasks (e.g. their ood runs)."""
        unknown = set(names) - {s.name for s in self.subtasks}
        if unknown:
            raise ValueError(f"mixture has no sub-task {sorted(unknown)}")
        chosen = tuple(s for s in self.subtasks if s.name in names)
        return Mixture(chosen, num_test=self.num_test, num_train=self.num_train)

    def ids_for(self, metric: str) -> list[int]:
        """The test ids a metric file must hold: those of the sub-tasks that report it."""
        return sorted(i for s in self.subtasks if metric in s.metrics for i in s.test_ids)

    def spans(self) -> dict[str, list[int]]:
        return {s.name: [s.test_ids.start, s.test_ids.stop] for s in self.subtasks}


GENERATION_METRICS = ("loss", "rouge1", "rouge2", "rougeL", "bleu")

#: The authors' FLAN mixture (utils/construct_runs-data-flan-*.py: the test-id offsets;
#: flan_train_0_1599.json / flan_eval_0_1054.json: the pool and test-set sizes).
FLAN_MIXTURE = Mixture(
    (
        SubTask("sst2", 0, 200),
        SubTask("rte", 200, 277),
        SubTask("boolq", 477, 200),
        SubTask("webnlg", 677, 178, GENERATION_METRICS),
        SubTask("wmt16_de_en", 855, 200, GENERATION_METRICS),
    ),
    num_test=1055,
    num_train=1600,
)


# ----------------------------------------------------------------------------- export


def _dumps(obj: Any) -> str:
    # Python's defaults, as their converters write (", " and ": "; NaN as the token NaN).
    return json.dumps(obj)


def _check_metric_name(name: str) -> None:
    if not isinstance(name, str) or not _METRIC_NAME.fullmatch(name):
        raise ValueError(f"metric name {name!r}: use letters, digits, '_', '.', '-' only")


def _check_writable(values: np.ndarray, what: str) -> None:
    bad = np.argwhere(np.isinf(values))
    if len(bad):
        raise ValueError(
            f"{what}: value at {tuple(int(i) for i in bad[0])} is infinite "
            "(only finite numbers and NaN can be written)"
        )


def _is_gptdynamics_folder(path: Path) -> bool:
    if not path.is_dir():
        return False
    if _OUR_RUN.fullmatch(path.name) or path.name.startswith("output_"):
        return True
    return any(
        p.name in (SAMPLES_FILE, RUN_FILE)
        or _TRAJECTORY.fullmatch(p.name)
        or _PRETRAIN.fullmatch(p.name)
        for p in path.iterdir()
    )


def _prepare_run(curriculum, metrics, lr, train_loss, subset, what: str) -> dict[str, Any]:
    """Check one run's arrays before anything is written (a refused export writes nothing)."""
    curriculum = np.asarray(curriculum)
    if curriculum.ndim != 2 or curriculum.shape[0] < 1 or curriculum.shape[1] < 1:
        raise ValueError(f"{what}: curriculum must be [T, B], T, B >= 1, got {curriculum.shape}")
    if not np.issubdtype(curriculum.dtype, np.integer) or (curriculum < 0).any():
        raise ValueError(f"{what}: curriculum must hold non-negative integer ids")
    num_steps = curriculum.shape[0]
    ys = {}
    for name, y in metrics.items():
        _check_metric_name(name)
        y = np.asarray(y, np.float32)
        if y.ndim != 2 or y.shape[0] != num_steps + 1:
            raise ValueError(
                f"{what}, metric {name}: shape {y.shape}, expected [T+1, N] "
                f"= [{num_steps + 1}, N] (row 0 = before training)"
            )
        _check_writable(y, f"{what}, metric {name}")
        ys[name] = y
    if not ys:
        raise ValueError(f"{what}: no metrics to export")

    def floats(x, key):
        x = np.full(num_steps, np.nan, np.float32) if x is None else np.asarray(x, np.float32)
        if x.shape != (num_steps,):
            raise ValueError(f"{what}: {key} must be [{num_steps}], got {x.shape}")
        _check_writable(x, f"{what}, {key}")
        return [float(v) for v in x]

    subset = np.unique(curriculum) if subset is None else np.asarray(subset)
    return {
        "curriculum": curriculum,
        "metrics": ys,
        "lr": floats(lr, "lr"),
        "train_loss": floats(train_loss, "train_loss"),
        "subset": [int(i) for i in subset],
    }


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"{type(x).__name__} is not JSON serializable")


def _write_run(folder: Path, run: dict[str, Any], meta: Mapping[str, Any] | None) -> None:
    curriculum = run["curriculum"]
    num_steps = curriculum.shape[0]
    lines = [
        _dumps({"step": s + 1, "samples_id": [int(i) for i in batch]})
        for s, batch in enumerate(curriculum)
    ]
    atomic_write_text(folder / SAMPLES_FILE, "\n".join(lines) + "\n")
    for name, y in run["metrics"].items():
        # Trajectory step s = y[s], the value after s steps: their reader pairs it with the
        # batch of step s. float(np.float32) is exact in float64, and JSON round-trips it.
        rows = [
            _dumps(
                {
                    "id": n,
                    "loss_trajectory": [
                        {"step": s, "loss": float(y[s, n])} for s in range(1, num_steps + 1)
                    ],
                }
            )
            for n in range(y.shape[1])
        ]
        atomic_write_text(trajectory_file(folder, name), "\n".join(rows) + "\n")
        first = [_dumps({"id": n, "step": 0, "loss": float(y[0, n])}) for n in range(y.shape[1])]
        atomic_write_text(pretrain_file(folder, name), "\n".join(first) + "\n")
    if meta is not None:
        extra = {
            "format": FORMAT,
            "lr": run["lr"],
            "train_loss": run["train_loss"],
            "subset": run["subset"],
            "meta": dict(meta),
        }
        text = json.dumps(extra, sort_keys=True, default=_json_default)
        atomic_write_text(folder / RUN_FILE, text + "\n")


def export_run(
    folder: str | os.PathLike,
    curriculum: np.ndarray,
    metrics: Mapping[str, np.ndarray],
    *,
    lr: np.ndarray | None = None,
    train_loss: np.ndarray | None = None,
    subset: np.ndarray | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """One run folder: curriculum int [T, B], metrics {name: [T+1, N]} (row 0 = before
    training). ``gptjax_run.json`` is written when ``meta`` is given."""
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} is not empty (export into a new folder)")
    run = _prepare_run(curriculum, metrics, lr, train_loss, subset, str(folder))
    _write_run(folder, run, meta)
    return folder


def text_file_names(task: str, num_train: int, num_test: int) -> tuple[str, str]:
    """Names of the id -> text files, after theirs (``sst2_train_0-199.json``)."""
    return f"{task}_train_0-{num_train - 1}.json", f"{task}_eval_0-{num_test - 1}.json"


def export_texts(
    out_dir: str | os.PathLike,
    train_texts: Sequence[str],
    test_texts: Sequence[str],
    *,
    task: str = "gptjax",
    train_contexts: Sequence[str] | None = None,
    test_contexts: Sequence[str] | None = None,
) -> tuple[Path, Path]:
    """The id -> text files their datasets read (``train_data_path`` / ``eval_data_path``):
    JSON lines {"id": i, "input": text} (+ "context", the prompt without its target, which
    their TracIn-CP dataset needs). Id i is position i (the pool id / the test index)."""
    out_dir = Path(out_dir)
    paths = []
    names = text_file_names(task, len(train_texts), len(test_texts))
    for name, texts, contexts in zip(
        names, (train_texts, test_texts), (train_contexts, test_contexts), strict=True
    ):
        if not texts:
            raise ValueError(f"{name}: no texts")
        if contexts is not None and len(contexts) != len(texts):
            raise ValueError(f"{name}: {len(contexts)} contexts for {len(texts)} texts")
        rows = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"{name}: text {i} is {type(text).__name__}, not str")
            row = {"id": i, "input": text}
            if contexts is not None:
                if not isinstance(contexts[i], str):
                    raise ValueError(f"{name}: context {i} is not str")
                row["context"] = contexts[i]
            rows.append(_dumps(row))
        atomic_write_text(out_dir / name, "\n".join(rows) + "\n")
        paths.append(out_dir / name)
    return paths[0], paths[1]


def export_dynamics(
    dyn: Dynamics,
    out_dir: str | os.PathLike,
    *,
    train_texts: Sequence[str] | None = None,
    test_texts: Sequence[str] | None = None,
    train_contexts: Sequence[str] | None = None,
    test_contexts: Sequence[str] | None = None,
    task: str = "gptjax",
    run_folder: str = "run_{k}",
) -> Path:
    """One folder per run, ``out_dir/run_<k>/`` (``run_folder`` formats ``k``), readable by
    their SimfluenceDataset; with texts, also the id -> text files (`export_texts`).

    ``out_dir`` must hold no run folders yet (no stale runs mixed into an export)."""
    out_dir = Path(out_dir)
    if out_dir.is_dir():
        stale = sorted(p.name for p in out_dir.iterdir() if _is_gptdynamics_folder(p))
        if stale:
            raise FileExistsError(f"{out_dir} already holds run folders {stale[:5]}")
    if (train_texts is None) != (test_texts is None):
        raise ValueError("give both train_texts and test_texts, or neither")
    if train_texts is not None:
        if dyn.curricula.size and int(dyn.curricula.max()) >= len(train_texts):
            raise ValueError(
                f"curricula use pool id {int(dyn.curricula.max())}, but there "
                f"are {len(train_texts)} train_texts"
            )
        for name, y in dyn.metrics.items():
            if y.shape[-1] != len(test_texts):
                raise ValueError(
                    f"metric {name} has {y.shape[-1]} test examples, "
                    f"but there are {len(test_texts)} test_texts"
                )
    names = [run_folder.format(k=k) for k in range(dyn.num_runs)]
    if len(set(names)) != len(names) or any(not n or "/" in n for n in names):
        raise ValueError(f"run_folder {run_folder!r} must give distinct folder names")
    runs = [
        _prepare_run(
            dyn.curricula[k],
            {name: y[k] for name, y in dyn.metrics.items()},
            dyn.lr[k],
            dyn.train_loss[k],
            dyn.subsets[k],
            f"run {k}",
        )
        for k in range(dyn.num_runs)
    ]
    for k, run in enumerate(runs):
        _write_run(out_dir / names[k], run, dyn.meta[k])
    if train_texts is not None:
        export_texts(
            out_dir,
            train_texts,
            test_texts,
            task=task,
            train_contexts=train_contexts,
            test_contexts=test_contexts,
        )
    return out_dir


# ----------------------------------------------------------------------------- import


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    out = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(f'key "{key}" appears twice')
        out[key] = value
    return out


def _json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) per line; a blank, non-JSON or non-object line is an error
    (their reader json-parses every line)."""
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                where = f"{path}, line {lineno}"
                if not line.strip():
                    raise ValueError(f"{where}: blank line (every line must be one JSON object)")
                try:
                    obj = json.loads(line, object_pairs_hook=_no_duplicate_keys)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{where}: not valid JSON ({err.msg})") from None
                except _DuplicateKey as err:
                    raise ValueError(f"{where}: {err}") from None
                if not isinstance(obj, dict):
                    raise ValueError(f"{where}: not a JSON object")
                yield lineno, obj
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason})") from None


def _key(obj: dict, key: str, where: str, context: str = "") -> Any:
    if key not in obj:
        raise ValueError(f'{where}: no "{key}" key{context}')
    return obj[key]


def _int(value: Any, where: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}: {what} is {json.dumps(value)}, not an integer")
    return value


def _value(value: Any, where: str, what: str) -> float:
    """A finite number that fits float32, or the token NaN."""
    if value is None:
        raise ValueError(
            f"{where}: {what} is null (a missing value is written as the bare token NaN)"
        )
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: {what} is {json.dumps(value)}, not a number")
    try:
        x = float(value)
    except OverflowError:
        raise ValueError(f"{where}: {what} is too large for float32") from None
    if math.isnan(x):
        return x
    if math.isinf(x):
        raise ValueError(f"{where}: {what} is infinite (only finite numbers and NaN)")
    with np.errstate(over="ignore"):
        if not np.isfinite(np.float32(x)):
            raise ValueError(f"{where}: {what} is {value}, too large for float32")
    return x


def _few(xs: Sequence[Any], total: int | None = None, n: int = 5) -> str:
    total = len(xs) if total is None else total
    shown = ", ".join(str(x) for x in xs[:n])
    return shown + (f", ... ({total} in all)" if total > min(n, len(xs)) else "")


def _gaps(present: set[int], lo: int, hi: int, n: int = 5) -> tuple[list[int], int]:
    """(the first n integers of lo..hi not in ``present``, how many are missing), without
    building lo..hi (a stray huge id must not cost memory); ``present`` lies in lo..hi."""
    first: list[int] = []
    expect = lo
    for x in sorted(present):
        while expect < x and len(first) < n:
            first.append(expect)
            expect += 1
        if len(first) >= n:
            break
        expect = x + 1
    while expect <= hi and len(first) < n:
        first.append(expect)
        expect += 1
    return first, (hi - lo + 1) - len(present)


def _read_samples(path: Path, pool_size: int | None) -> tuple[np.ndarray, int]:
    """(curriculum int32 [T, B], T) from train_samples_id.json."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found (a GPTDynamics run folder needs it: JSON lines "
            '{"step": s, "samples_id": [...]}, s = 1..T)'
        )
    limit = _INT32_MAX if pool_size is None else pool_size - 1
    by_step: dict[int, tuple[int, list[int]]] = {}
    width: tuple[int, int] | None = None
    for lineno, obj in _json_lines(path):
        where = f"{path}, line {lineno}"
        step = _int(_key(obj, "step", where), where, '"step"')
        if step < 1:
            raise ValueError(
                f"{where}: step {step}; steps start at 1 (step s is the batch "
                "of the s-th training step)"
            )
        ids = _key(obj, "samples_id", where)
        if not isinstance(ids, list) or not ids:
            raise ValueError(f'{where}: "samples_id" must be a non-empty list of ids')
        for i in ids:
            _int(i, where, "a sample id")
            if i < 0 or i > limit:
                pool = "" if pool_size is None else f" (the pool has ids 0..{pool_size - 1})"
                raise ValueError(f"{where}: sample id {i} of step {step} is outside the pool{pool}")
        if step in by_step:
            raise ValueError(f"{where}: step {step} again (first on line {by_step[step][0]})")
        if width is None:
            width = (lineno, len(ids))
        elif len(ids) != width[1]:
            raise ValueError(
                f"{where}: the batch of step {step} has {len(ids)} ids, the one "
                f"on line {width[0]} has {width[1]} (batches must be one size)"
            )
        by_step[step] = (lineno, ids)
    if not by_step:
        raise ValueError(f"{path}: empty (no training steps)")
    num_steps = max(by_step)
    missing, count = _gaps(set(by_step), 1, num_steps)
    if missing:
        raise ValueError(
            f"{path}: no batch for step(s) {_few(missing, count)}; steps must be "
            f"1..{num_steps}, one line each"
        )
    curriculum = np.array([by_step[s][1] for s in range(1, num_steps + 1)], np.int32)
    return curriculum, num_steps


def _read_trajectories(
    path: Path, num_steps: int, allowed: set[int] | None
) -> tuple[dict[int, np.ndarray], dict[int, int]]:
    """({test id: float32 [T] values after steps 1..T}, {test id: line})."""
    rows: dict[int, np.ndarray] = {}
    lines: dict[int, int] = {}
    for lineno, obj in _json_lines(path):
        where = f"{path}, line {lineno}"
        n = _int(_key(obj, "id", where), where, '"id"')
        if n < 0:
            raise ValueError(f"{where}: test id {n} is negative")
        if allowed is not None and n not in allowed:
            raise ValueError(
                f"{where}: test id {n} belongs to no sub-task of the mixture that "
                "reports this metric"
            )
        if n in lines:
            raise ValueError(f"{where}: test id {n} again (first on line {lines[n]})")
        traj = _key(obj, "loss_trajectory", where)
        if not isinstance(traj, list):
            raise ValueError(f'{where}: "loss_trajectory" of test id {n} is not a list')
        values = np.full(num_steps, np.nan, np.float32)
        seen: set[int] = set()
        for j, point in enumerate(traj):
            ctx = f" in point {j} of test id {n}"
            if not isinstance(point, dict):
                raise ValueError(f"{where}: point {j} of test id {n} is not an object")
            step = _int(_key(point, "step", where, ctx), where, f'"step"{ctx}')
            if step in seen:
                raise ValueError(f"{where}: test id {n} has step {step} twice")
            if not 1 <= step <= num_steps:
                hint = (
                    " (T+1 points: the pre-training value belongs in pretrain_<metric>.json, "
                    "not at step 1)"
                    if step == num_steps + 1
                    else ""
                )
                raise ValueError(
                    f"{where}: test id {n} has a value at step {step}, but "
                    f"{SAMPLES_FILE} has steps 1..{num_steps}{hint}"
                )
            values[step - 1] = _value(_key(point, "loss", where, ctx), where, f"the value{ctx}")
            seen.add(step)
        if len(seen) != num_steps:
            missing, count = _gaps(seen, 1, num_steps)
            raise ValueError(
                f"{where}: test id {n} has no value at step(s) {_few(missing, count)} "
                f"(every step 1..{num_steps} needs one)"
            )
        rows[n] = values
        lines[n] = lineno
    if not rows:
        raise ValueError(f"{path}: empty (no test examples)")
    return rows, lines


def _read_pretrain(path: Path, ids: set[int]) -> dict[int, float]:
    values: dict[int, float] = {}
    lines: dict[int, int] = {}
    for lineno, obj in _json_lines(path):
        where = f"{path}, line {lineno}"
        n = _int(_key(obj, "id", where), where, '"id"')
        if n not in ids:
            raise ValueError(f"{where}: test id {n} is not in the trajectory file")
        if n in lines:
            raise ValueError(f"{where}: test id {n} again (first on line {lines[n]})")
        step = _int(_key(obj, "step", where), where, '"step"')
        if step != 0:
            raise ValueError(f"{where}: step {step}; the pre-training value is step 0")
        values[n] = _value(_key(obj, "loss", where), where, "the value")
        lines[n] = lineno
    missing = sorted(ids - values.keys())
    if missing:
        raise ValueError(f"{path}: no pre-training value for test id(s) {_few(missing)}")
    return values


def _read_run_file(path: Path, num_steps: int) -> dict[str, Any]:
    try:
        run = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}, line {err.lineno}: not valid JSON ({err.msg})") from None
    except (UnicodeDecodeError, _DuplicateKey) as err:
        raise ValueError(f"{path}: {err}") from None
    if not isinstance(run, dict):
        raise ValueError(f"{path}: not a JSON object")
    if run.get("format") != FORMAT:
        raise ValueError(f'{path}: "format" is {run.get("format")!r}, expected {FORMAT!r}')
    out: dict[str, Any] = {}
    for key in ("lr", "train_loss"):
        xs = _key(run, key, str(path))
        if not isinstance(xs, list) or len(xs) != num_steps:
            raise ValueError(
                f'{path}: "{key}" must be a list of {num_steps} values '
                f"(one per step of {SAMPLES_FILE})"
            )
        out[key] = np.array(
            [_value(x, str(path), f'"{key}"[{i}]') for i, x in enumerate(xs)], np.float32
        )
    subset = _key(run, "subset", str(path))
    if not isinstance(subset, list):
        raise ValueError(f'{path}: "subset" is not a list')
    out["subset"] = np.array([_int(i, str(path), "a subset id") for i in subset], np.int32)
    if (out["subset"] < 0).any():
        raise ValueError(f'{path}: "subset" holds a negative id')
    meta = _key(run, "meta", str(path))
    if not isinstance(meta, dict):
        raise ValueError(f'{path}: "meta" is not an object')
    out["meta"] = meta
    return out


def import_run(
    folder: str | os.PathLike,
    *,
    metrics: Sequence[str] | None = None,
    mixture: Mixture | None = None,
    pool_size: int | None = None,
    num_test: int | None = None,
) -> RunRecord:
    """One run folder (theirs or ours). Metric arrays are [T+1, N]: row s = after s steps,
    row 0 from pretrain_<metric>.json or NaN. ``metrics``: the ones to read (default all
    all_*_trajectory.out); ``pool_size``: training ids must be below it (default: the
    mixture's pool size, if any); ``num_test``: N (default: the mixture's, else the ids)."""
    folder = Path(folder)
    if pool_size is None and mixture is not None:
        pool_size = mixture.num_train
    curriculum, num_steps = _read_samples(folder / SAMPLES_FILE, pool_size)
    if metrics is None:
        found = {m.group(1): p for p in folder.iterdir() if (m := _TRAJECTORY.fullmatch(p.name))}
        if not found:
            raise FileNotFoundError(f"{folder}: no all_<metric>_trajectory.out files")
        for p in folder.iterdir():
            m = _PRETRAIN.fullmatch(p.name)
            if m and m.group(1) not in found:
                raise ValueError(f"{p}: no all_{m.group(1)}_trajectory.out beside it")
    else:
        found = {}
        for name in metrics:
            path = trajectory_file(folder, name)
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found")
            found[name] = path
    if mixture is not None:
        num_test = mixture.num_test if num_test is None else num_test
        if num_test != mixture.num_test:
            raise ValueError(f"num_test {num_test} but the mixture has {mixture.num_test}")

    out: dict[str, np.ndarray] = {}
    first: tuple[Path, int] | None = None  # (file, N) the others must match
    for name in sorted(found):
        path = found[name]
        allowed = None
        if mixture is not None:
            allowed = set(mixture.ids_for(name))
            if not allowed:
                raise ValueError(f"{path}: no sub-task of the mixture reports {name!r}")
        rows, _ = _read_trajectories(path, num_steps, allowed)
        ids = set(rows)
        if mixture is not None:
            missing = sorted(allowed - ids)
            if missing:
                raise ValueError(
                    f"{path}: no line for test id(s) {_few(missing)} (sub-tasks {mixture.spans()})"
                )
            width = mixture.num_test
        else:
            width = max(ids) + 1
            missing, count = _gaps(ids, 0, width - 1)
            if missing:
                raise ValueError(
                    f"{path}: test ids must be 0..N-1; id(s) {_few(missing, count)} "
                    f"missing below {width - 1}"
                )
            if num_test is not None and width != num_test:
                raise ValueError(f"{path}: test ids 0..{width - 1}, expected 0..{num_test - 1}")
            if first is not None and width != first[1]:
                raise ValueError(
                    f"{path}: test ids 0..{width - 1}, but {first[0]} has "
                    f"0..{first[1] - 1} (every metric must cover the same tests)"
                )
            first = first or (path, width)
        y = np.full((num_steps + 1, width), np.nan, np.float32)
        for n, values in rows.items():
            y[1:, n] = values
        pre = pretrain_file(folder, name)
        if pre.is_file():
            for n, v in _read_pretrain(pre, ids).items():
                y[0, n] = v
        out[name] = y

    run_path = folder / RUN_FILE
    if run_path.is_file():
        run = _read_run_file(run_path, num_steps)
        lr, train_loss, subset, meta = run["lr"], run["train_loss"], run["subset"], run["meta"]
    else:
        lr = np.full(num_steps, np.nan, np.float32)
        train_loss = np.full(num_steps, np.nan, np.float32)
        subset = np.unique(curriculum).astype(np.int32)
        meta = {"status": "ok", "source": f"gptdynamics:{folder}"}
        if mixture is not None:
            meta["subtasks"] = mixture.spans()
    return RunRecord(
        curriculum=curriculum, subset=subset, lr=lr, train_loss=train_loss, metrics=out, meta=meta
    )


def _natural(name: str) -> list:
    """seed-2 before seed-10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def run_folders(root: str | os.PathLike) -> list[Path]:
    """The run folders under ``root`` in natural order of their names (seed-2 before
    seed-10; ``root`` itself if it is one run). A folder that looks like a run (named
    ``run_<k>`` / ``output_...``, or holding any GPTDynamics file) but lacks
    train_samples_id.json is an error, as are gaps in our own ``run_<k>`` numbering."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    folders = sorted(
        (p for p in root.iterdir() if _is_gptdynamics_folder(p)), key=lambda p: _natural(p.name)
    )
    if not folders and (root / SAMPLES_FILE).is_file():
        return [root]
    if not folders:
        raise FileNotFoundError(f"no GPTDynamics run folders (with {SAMPLES_FILE}) under {root}")
    for p in folders:
        if not (p / SAMPLES_FILE).is_file():
            raise FileNotFoundError(
                f"{p / SAMPLES_FILE} not found: {p.name} looks like a run "
                "folder (runs are not skipped or renumbered)"
            )
    ours = [_OUR_RUN.fullmatch(p.name) for p in folders]
    if all(ours):
        numbers = [int(m.group(1)) for m in ours]
        missing, _ = _gaps(set(numbers), 0, max(numbers))
        if missing:
            raise FileNotFoundError(
                f"{root}: run_{missing[0]} is missing (have "
                f"{_few([p.name for p in folders])}); runs are not renumbered"
            )
    return folders


def import_dynamics(
    root: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    metrics: Sequence[str] | None = None,
    mixture: Mixture | None = None,
    pool_size: int | None = None,
    num_test: int | None = None,
) -> Dynamics:
    """Every run folder under ``root`` (see `run_folders`), or the given list of folders in
    that order (like their ``data_paths_dict``), checked (`import_run`) and stacked: all runs
    must share T, the batch size, the metrics and each metric's test ids."""
    if isinstance(root, str | os.PathLike):
        folders = run_folders(root)
    else:
        folders = [Path(p) for p in root]
        if not folders:
            raise FileNotFoundError("no run folders given")
    kw = dict(metrics=metrics, mixture=mixture, pool_size=pool_size, num_test=num_test)
    records = [import_run(p, **kw) for p in folders]
    ref, r0 = folders[0], records[0]
    for p, r in zip(folders[1:], records[1:], strict=True):
        if r.curriculum.shape[0] != r0.curriculum.shape[0]:
            raise ValueError(
                f"{p / SAMPLES_FILE}: {r.curriculum.shape[0]} steps, but "
                f"{ref / SAMPLES_FILE} has {r0.curriculum.shape[0]}"
            )
        if r.curriculum.shape[1] != r0.curriculum.shape[1]:
            raise ValueError(
                f"{p / SAMPLES_FILE}, line 1: batches of {r.curriculum.shape[1]}, "
                f"but {ref / SAMPLES_FILE} has {r0.curriculum.shape[1]}"
            )
        if sorted(r.metrics) != sorted(r0.metrics):
            raise ValueError(
                f"{p}: metrics {sorted(r.metrics)}, but {ref} has {sorted(r0.metrics)}"
            )
        for name, y in r.metrics.items():
            if y.shape[1] != r0.metrics[name].shape[1]:
                raise ValueError(
                    f"{trajectory_file(p, name)}: test ids 0..{y.shape[1] - 1}, "
                    f"but {trajectory_file(ref, name)} has "
                    f"0..{r0.metrics[name].shape[1] - 1}"
                )
    return stack_runs(records)


def import_texts(path: str | os.PathLike, *, field: str = "input") -> list[str]:
    """An id -> text file (JSON lines {"id": i, "input": ...}) as a list indexed by id;
    ids must be 0..n-1. ``field="context"`` reads their prompts-without-target."""
    path = Path(path)
    texts: dict[int, str] = {}
    lines: dict[int, int] = {}
    for lineno, obj in _json_lines(path):
        where = f"{path}, line {lineno}"
        i = _int(_key(obj, "id", where), where, '"id"')
        if i in lines:
            raise ValueError(f"{where}: id {i} again (first on line {lines[i]})")
        text = _key(obj, field, where)
        if not isinstance(text, str):
            raise ValueError(f'{where}: "{field}" is not a string')
        texts[i], lines[i] = text, lineno
    if not texts:
        raise ValueError(f"{path}: empty")
    if min(texts) < 0:
        raise ValueError(f"{path}, line {lines[min(texts)]}: id {min(texts)} is negative")
    missing, count = _gaps(set(texts), 0, max(texts))
    if missing:
        raise ValueError(f"{path}: ids must be 0..n-1; id(s) {_few(missing, count)} missing")
    return [texts[i] for i in range(len(texts))]
