"""Stage wall times in the workdir's ``results/timings.json``: every invocation of every
stage, so that a job stopped and resumed by the same command counts all of its parts, each
with the machine's load at its end (was anything else running?)."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from gptjax import io
from gptjax.pipeline.workdir import Workdir

TIMINGS = "timings.json"
# A 1-minute load average above this many times the CPU count at the end of an invocation
# says other jobs shared the machine (one job of ours keeps the load near the CPU count).
BESIDE_OTHER_JOBS = 1.5


class StageTimer:
    """Times each stage, says how long it took, and records it in ``results/timings.json``.

    A stage may take several invocations (a job stopped and resumed by the same command
    picks up where it left off), so the file keeps every invocation of every stage, each
    with the machine's 1-minute load average at its end (a load well above the CPU count
    says other jobs shared the machine): ``{stage: {"invocations": [{"seconds",
    "completed", "load_1m", "cpus"}, ...]}}``; a stage's time is their sum
    (``stage_seconds``). An invocation that is stopped with Ctrl-C is recorded with
    ``completed: false``; one killed outright, or one that failed, records nothing."""

    def __init__(self, workdir: Workdir):
        self.workdir = workdir

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        except KeyboardInterrupt:
            # Stopped by hand, to be resumed: the part it did counts towards the stage.
            # (An error records nothing: bad input leaves the workdir as it was.)
            with contextlib.suppress(OSError, ValueError):
                self._record(stage, time.perf_counter() - start, completed=False)
            raise
        seconds = time.perf_counter() - start
        print(f"{stage}: {seconds:.1f} s", flush=True)
        self._record(stage, seconds, completed=True)

    def _record(self, stage: str, seconds: float, completed: bool) -> None:
        import jax  # here: reading times (experiments.report) needs no JAX

        if jax.process_index() != 0:
            return  # one process records the job's times
        path = self.workdir.result(TIMINGS)
        try:
            timings = _load_timings(path)
        except ValueError as e:
            # Times are a record, not a result: keep the damaged file beside the new one
            # for whoever wants it, say so, and let the finished stage go on.
            path.replace(path.with_name(TIMINGS + ".damaged"))
            print(f"warning: {e}; moved aside to {TIMINGS}.damaged", file=sys.stderr)
            timings = {}
        entry = {
            "seconds": round(seconds, 3),
            "completed": completed,
            "load_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
            "cpus": os.cpu_count(),
        }
        earlier = timings.get(stage, {})
        timings[stage] = {"invocations": earlier.get("invocations", []) + [entry]}
        if earlier.get("last_only"):
            timings[stage]["last_only"] = True
        io.atomic_write_json(path, timings)


def _load_timings(path: Path) -> dict[str, dict]:
    """timings.json as {stage: {"invocations": [...]}}; {} when there is none. Files written
    before invocations were kept (``{stage: seconds}``) read as one invocation each, marked
    ``last_only``. ValueError names a damaged file."""
    if not path.is_file():
        return {}
    timings = io.read_json(path)
    if not isinstance(timings, dict):
        raise ValueError(f"{path}: not a JSON object")
    records = {}
    for stage, value in timings.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = {
                "invocations": [{"seconds": float(value)}],
                "last_only": True,  # earlier invocations were not kept
            }
        if not (
            isinstance(value, dict)
            and isinstance(value.get("invocations"), list)
            and all(_has_seconds(i) for i in value["invocations"])
        ):
            raise ValueError(f"{path}: stage {stage!r} is not a record of seconds")
        records[stage] = value
    return records


def _has_seconds(value: object) -> bool:
    return isinstance(value, dict) and isinstance(value.get("seconds"), int | float)


def _total(record: dict) -> float:
    return float(sum(i["seconds"] for i in record["invocations"]))


def stage_seconds(results_dir: Path) -> dict[str, float]:
    """{stage: seconds over all its invocations} from ``results_dir/timings.json``; {} when
    there is none."""
    return {s: _total(r) for s, r in _load_timings(Path(results_dir) / TIMINGS).items()}


def stage_invocations(results_dir: Path) -> dict[str, list[dict]]:
    """{stage: its invocations} from ``results_dir/timings.json`` (see StageTimer)."""
    records = _load_timings(Path(results_dir) / TIMINGS)
    return {s: r["invocations"] for s, r in records.items()}


def _summary(record: dict) -> dict:
    runs = record["invocations"]
    loads = [i["load_1m"] for i in runs if i.get("load_1m") is not None]
    return {
        "invocations": len(runs),
        "stopped": sum(1 for i in runs if i.get("completed") is False),
        "max_load_1m": max(loads) if loads else None,
        "cpus": next((i["cpus"] for i in runs if i.get("cpus")), None),
    }


def beside_other_jobs(summary: dict) -> bool:
    """Whether a stage (its `stage_summary` entry) shared the machine with other jobs."""
    load, cpus = summary.get("max_load_1m"), summary.get("cpus")
    return load is not None and bool(cpus) and load > BESIDE_OTHER_JOBS * cpus


def stage_summary(results_dir: Path) -> dict[str, dict] | None:
    """{stage: {"invocations": n, "stopped": n, "max_load_1m", "cpus"}} from
    ``results_dir/timings.json``; None when there is no file or it predates keeping every
    invocation (its seconds are then each stage's last invocation only)."""
    records = _load_timings(Path(results_dir) / TIMINGS)
    if not records or any(r.get("last_only") for r in records.values()):
        return None
    return {stage: _summary(record) for stage, record in records.items()}


def _row(stage: str, record: dict) -> str:
    s = _summary(record)
    known = s["max_load_1m"] is not None and s["cpus"]
    load = f"{s['max_load_1m']:.1f} / {s['cpus']}" if known else "–"
    count = f"{s['invocations']}" + (f" ({s['stopped']} stopped)" if s["stopped"] else "")
    if record.get("last_only"):
        count += " (and any before the first, not kept)"
    return f"| {stage} | {_total(record):.1f} | {count} | {load} |"


def stage_time_rows(results_dir: Path) -> list[str]:
    """A Markdown table of ``results_dir/timings.json``: its caption, then its lines; []
    when there is no file."""
    records = _load_timings(Path(results_dir) / TIMINGS)
    if not records:
        return []
    caption = (
        "(seconds over every invocation; a stage stopped and resumed counts each part; "
        "load: the highest 1-minute load average at the end of an invocation, against the "
        "CPU count)"
    )
    return [
        caption,
        "| stage | seconds | invocations | load / CPUs |",
        "|---|---|---|---|",
        *(_row(stage, record) for stage, record in records.items()),
    ]
