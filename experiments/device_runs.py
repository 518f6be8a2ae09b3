"""The measurements taken on an accelerator lent to a session, read from their logs.

`benchmarks/device_check.sh` writes its logs; a session that ran it keeps them, as they came
back, in ``benchmarks/results/<machine>_<date>/`` (committed). EXPERIMENTS.md's paper-scale
section quotes the paper-scale collection timing from those logs (``paper_scale_lines``), so
its numbers are never typed by hand either.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

RESULTS = Path("benchmarks") / "results"
SCRIPT = "benchmarks.collect_paper_scale"
PROTOCOL_RUNS, PROTOCOL_STEPS = 32, 96  # the paper's collection (configs/paper_pythia410m.py)

_MODEL = re.compile(
    r"^model: (?P<params>\d+)M parameters \(d_model (?P<d_model>\d+), (?P<layers>\d+) layers\); "
    r"(?P<platform>\w+) \((?P<device>[^)]*)\); (?P<n_test>\d+) test examples, "
    r"max_len (?P<max_len>\d+)$"
)
_ROW = re.compile(
    r"^(?P<name>[^:]+): (?P<s>[\d.]+) s per run-step \(first group (?P<first>[\d.]+) s, "
    r"total (?P<total>[\d.]+) s\)$"
)
_START = re.compile(r"^=== (?P<step>\w+): (?P<command>.*)$")
_END = re.compile(r"^=== (?P<step>\w+): rc=(?P<rc>\d+) in (?P<seconds>\d+) s$")


def parse_paper_scale(text: str) -> dict | None:
    """The paper-scale step of a device_check log: its command's settings, the model line, the
    timed rows (with the projection of the paper's collection) and how the step ended."""
    from benchmarks.collect_paper_scale import parser

    lines = text.splitlines()
    for i, line in enumerate(lines):
        start = _START.match(line)
        if not (start and SCRIPT in start["command"] and not _END.match(line)):
            continue
        argv = shlex.split(start["command"])
        args = parser().parse_args(argv[argv.index(SCRIPT) + 1 :])
        out: dict = {"runs": args.runs, "steps": args.steps, "rows": [], "rc": None}
        for body in lines[i + 1 :]:
            end = _END.match(body)
            if end and end["step"] == start["step"]:
                out["rc"], out["seconds"] = int(end["rc"]), int(end["seconds"])
                break
            if m := _MODEL.match(body):
                out["model"] = m.groupdict()
            elif m := _ROW.match(body):
                s, first, total = float(m["s"]), float(m["first"]), float(m["total"])
                group = args.runs * args.steps * s  # the second group, at the steady rate
                overhead = first - group + (total - first - group)  # compile, setup
                out["rows"].append(
                    {
                        "name": m["name"],
                        "s_per_run_step": s,
                        "first_group_s": first,
                        "overhead_s": overhead,
                        "protocol_s": overhead + PROTOCOL_RUNS * PROTOCOL_STEPS * s,
                    }
                )
        return out if "model" in out else None
    return None


def paper_scale_lines(repo: Path) -> list[str]:
    """Markdown for EXPERIMENTS.md: each logged paper-scale collection timing, or nothing."""
    lines: list[str] = []
    for log in sorted((repo / RESULTS).glob("*/device_check_*.log")):
        found = parse_paper_scale(log.read_text())
        if not found or not found["rows"]:
            continue
        model = found["model"]
        where = log.relative_to(repo).as_posix()
        lines += [
            "No Pythia-410M checkpoint is on these machines (nothing is downloaded), so the "
            "config has not run at this scale; `tests/test_paper_config.py` runs its command "
            "end to end on a tiny checkpoint of Pythia's layout, only the sizes made small. "
            f"Measured on an accelerator ({model['device']}; log "
            f"[`{where}`]({where})): the collection alone at this shape, a "
            f"{model['params']}M-parameter GPT-NeoX (d_model {model['d_model']}, "
            f"{model['layers']} layers) with weights built in code, on SST-2 (batch 4, "
            f"{model['n_test']} test examples evaluated after every step, up to "
            f"{model['max_len']} tokens), {found['runs']} runs vmapped per group "
            f"(`python -m {SCRIPT}`). The weights do not change the work a step does; the "
            "trajectories are not a result.",
            "",
            f"| configuration | s per run-step | first group (compilation included) | "
            f"projected {PROTOCOL_RUNS} runs × {PROTOCOL_STEPS} steps |",
            "|---|---|---|---|",
        ]
        for row in found["rows"]:
            lines.append(
                f"| {row['name']} | {row['s_per_run_step']:.3f} | {row['first_group_s']:.0f} s "
                f"| {row['protocol_s'] / 60:.1f} min |"
            )
        if found["rc"] not in (0, None):
            lines.append(
                f"| (the step stopped at its time limit, {found['seconds']} s, before the "
                "remaining rows) | | | |"
            )
        lines.append("")
    return lines
