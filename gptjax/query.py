"""Command line: ask a finished workdir which training examples helped or hurt a test example,
what another curriculum would do, and which labels look wrong (see docs/query.md).

    python -m gptjax.query --workdir workdirs/demo --test 3
    python -m gptjax.query --workdir workdirs/demo --test 3 --k 10 --json out.json --csv out.csv
    python -m gptjax.query --workdir workdirs/demo --curriculum batches.json
    python -m gptjax.query --workdir workdirs/demo --mislabels

The answers come from `gptjax.pipeline.queries`. A mistake in the input (no such workdir, an
unfinished one, a test id out of range, a bad curriculum file) ends with one line
``error: ...`` on stderr and exit status 2 (``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import argparse
import csv
import io as stdio
import json
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from gptjax.cli import fail, quiet_orbax, run_reporting_errors

TEXT_WIDTH = 44
CSV_FIELDS = (
    "query",
    "method",
    "kind",
    "rank",
    "pool_id",
    "score",
    "input",
    "target",
    "flipped",
    "related",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not argparse's usage block
        fail(message)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = _Parser(
        prog="python -m gptjax.query",
        description="Influence queries on a finished workdir (see docs/query.md).",
    )
    p.add_argument("--workdir", required=True, help="a workdir python -m gptjax.main finished")
    p.add_argument("--test", type=int, help="test example id: its top helpful / harmful examples")
    p.add_argument("--k", type=int, default=5, help="rows per table and k of the precision")
    p.add_argument("--metric", default="loss", help="loss (default), bleu or rougeL")
    p.add_argument("--simulator", default="gptfluence", help="a simulator the workdir fitted")
    p.add_argument(
        "--curriculum", help="FILE.json (a list of batches) or FILE.jsonl (a batch a line)"
    )
    p.add_argument("--mislabels", action="store_true", help="rank the pool by suspicion")
    p.add_argument("--no-tracin", action="store_true", help="skip the TracIn column")
    p.add_argument("--json", help="write every answer to this JSON file")
    p.add_argument("--csv", help="write the listed examples to this CSV file")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = p.parse_args(argv)
    if args.test is None and args.curriculum is None and not args.mislabels:
        fail("nothing to ask: give --test N, --curriculum FILE or --mislabels")
    if args.csv and args.test is None and not args.mislabels:
        fail("--csv lists examples: use it with --test or --mislabels")
    return args


# ---- input files -------------------------------------------------------------------------


def read_curriculum(path: str) -> list[list[Any]]:
    """Batches from FILE.json (a list of batches, or {"batches": [...]}) or FILE.jsonl (one
    batch, a JSON list, per line); each batch holds pool ids or texts."""
    file = Path(path)
    if file.suffix not in (".json", ".jsonl"):
        raise ValueError(f"curriculum file {path}: must end in .json or .jsonl")
    if not file.is_file():
        raise FileNotFoundError(f"curriculum file {path} does not exist")
    text = file.read_text()
    try:
        if file.suffix == ".jsonl":
            batches = [
                json.loads(line)
                for line in text.splitlines()
                if line.strip()  # blank lines are not batches
            ]
        else:
            batches = json.loads(text)
            if isinstance(batches, dict) and "batches" in batches:
                batches = batches["batches"]
    except json.JSONDecodeError as err:
        raise ValueError(f"curriculum file {path}: not valid JSON ({err})") from err
    if not isinstance(batches, list) or not batches:
        raise ValueError(f"curriculum file {path}: expected a non-empty list of batches")
    return batches


# ---- tables ------------------------------------------------------------------------------


def one_line(text: str, width: int = TEXT_WIDTH) -> str:
    """The text on one line, shortened in the middle (its start and its end, where a prompt
    asks its question, are kept)."""
    text = " / ".join(part.strip() for part in text.splitlines() if part.strip())
    if len(text) <= width:
        return text
    head = (width - 1) // 4
    return text[:head] + "…" + text[len(text) - (width - 1 - head) :]


def table(headers: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> str:
    cols = list(zip(headers, *rows, strict=True))
    widths = [max(len(c) for c in col) for col in cols]

    def line(cells):
        out = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    return "\n".join([line(headers)] + [line(r) for r in rows])


def _mark(row: dict[str, Any]) -> str:
    return ("*" if row.get("related") else "") + ("!" if row.get("flipped") else "")


def _example_text(row: dict[str, Any]) -> str:
    return one_line(row["input"] + row["target"])


def format_influences(res: dict[str, Any]) -> str:
    metric, sim, tr = res["metric"], res["simulator"], res["tracin"]
    test = res["test"]
    direction = "higher" if res["higher_is_better"] else "lower"
    out = [
        f"test example {res['test_id']}: {one_line(test['input'] + test['target'], 100)}",
        f"{metric} before training {test['y0']:.4f}; effects taken at {test['y_ref']:.4f} "
        f"(the training runs' mean); {direction} is better",
    ]
    for kind in ("helpful", "harmful"):
        first = (
            "most negative" if (kind == "helpful") != res["higher_is_better"] else "most positive"
        )
        out += [
            "",
            f"top {res['k']} {kind} training examples ({first} effect on the {metric} first)",
        ]
        headers = ["#", f"{sim['name']} id", "effect", "text"]
        right = {0, 1, 2}
        if tr["available"]:
            headers += [
                f"tracin id (run {tr['run']}, {len(tr['checkpoints'])} ckpts)",
                "effect",
                "text",
            ]
            right |= {4, 5}
        rows = []
        for i, row in enumerate(sim[kind]):
            cells = [
                str(row["rank"]),
                f"{row['pool_id']}{_mark(row)}",
                f"{row['effect']:+.4f}",
                _example_text(row),
            ]
            if tr["available"]:
                t = tr[kind][i]
                cells += [f"{t['pool_id']}{_mark(t)}", f"{t['effect']:+.4f}", _example_text(t)]
            rows.append(cells)
        out.append(table(headers, rows, right))
    marks = [r for kind in ("helpful", "harmful") for r in sim[kind] + tr.get(kind, [])]
    legend = []
    if any(r.get("related") for r in marks):
        legend.append("* related to the test example (ground truth)")
    if any(r.get("flipped") for r in marks):
        legend.append("! label flipped on purpose")
    if legend:
        out.append("; ".join(legend))
    if tr["available"]:
        agree = res["agreement"]
        out.append(
            f"TracIn-CP: -Σ_c η_c <∇ℓ(example), ∇ℓ(test)> over run {tr['run']}'s checkpoints "
            f"{tr['checkpoints']}; {agree['helpful_overlap']} of the top {res['k']} helpful in "
            f"common, Spearman over the pool {agree['spearman']:.3f}"
        )
    else:
        out.append(f"TracIn: unavailable ({tr['reason']})")
    return "\n".join(out)


def format_precision(res: dict[str, Any]) -> str:
    return (
        f"top-{res['k']} precision against the ground-truth relatedness ({res['num_test']} test "
        f"examples, {res['num_train']} training examples): {res['simulator']} "
        f"{res['precision']:.3f}, random {res['random']:.3f}"
    )


def format_curriculum(res: dict[str, Any], source: str, test_id: int | None) -> str:
    traj, curriculum = np.asarray(res["trajectories"]), np.asarray(res["curriculum"])
    steps, n = curriculum.shape[0], traj.shape[1]
    out = [
        f"curriculum {source}: {steps} steps; simulated {res['metric']} of the {n} test examples "
        f"({res['simulator']}, from the base model's values)"
    ]
    headers = ["step", "batch (pool ids)", "mean", "min", "max"]
    if test_id is not None:
        headers.append(f"test {test_id}")
    rows = []
    for t in range(steps + 1):
        batch = "-" if t == 0 else " ".join(str(i) for i in curriculum[t - 1] if i >= 0)
        cells = [str(t), batch] + [
            f"{v:.4f}" for v in (traj[t].mean(), traj[t].min(), traj[t].max())
        ]
        if test_id is not None:
            cells.append(f"{traj[t, test_id]:.4f}")
        rows.append(cells)
    out.append(table(headers, rows, {0, 2, 3, 4, 5}))
    out += [f"warning: {w}" for w in res["warnings"]]
    return "\n".join(out)


def format_mislabels(res: dict[str, Any], k: int) -> str:
    out = [
        f"training examples by suspicion ({res['simulator']}: summed harmful effect on the "
        f"{res['metric']} over every test example), first {k}"
    ]
    show_flipped = res["flipped_total"] is not None
    headers = ["#", "id", "harm"] + (["flipped"] if show_flipped else []) + ["text"]
    rows = []
    for row in res["ranking"][:k]:
        cells = [str(row["rank"]), str(row["pool_id"]), f"{row['harm']:.4f}"]
        if show_flipped:
            cells.append("yes" if row["flipped"] else "")
        rows.append(cells + [one_line(row["input"] + row["target"], 60)])
    out.append(table(headers, rows, {0, 1, 2}))
    if show_flipped:
        n = res["flipped_total"]
        out.append(
            f"flipped labels: {n} of {len(res['ranking'])} training examples"
            + (
                f"; {res['flipped_in_top']} of them in the first {n} (a random order: "
                f"{res['random_in_top']:.2f})"
                if n
                else ""
            )
        )
    return "\n".join(out)


# ---- outputs -----------------------------------------------------------------------------


def plain(x: Any) -> Any:
    """Arrays as lists, recursively (for JSON)."""
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    return x


def csv_rows(answers: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    res = answers.get("top_influences")
    if res is not None:
        for method, section in (("simulator", res["simulator"]), ("tracin", res["tracin"])):
            name = section.get("name", method)
            for kind in ("helpful", "harmful"):
                for row in section.get(kind, []):
                    rows.append(
                        {"query": "top_influences", "method": name, "kind": kind}
                        | {k: row.get(k) for k in CSV_FIELDS[3:] if k != "score"}
                        | {"score": row["effect"]}
                    )
    res = answers.get("mislabels")
    if res is not None:
        for row in res["ranking"]:
            rows.append(
                {"query": "mislabels", "method": res["simulator"], "kind": "suspicious"}
                | {k: row.get(k) for k in CSV_FIELDS[3:] if k != "score"}
                | {"score": row["harm"]}
            )
    return rows


def write_csv(path: str, rows: list[dict[str, Any]]) -> None:
    from gptjax import io

    buffer = stdio.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    io.atomic_write_text(path, buffer.getvalue())


# ---- main --------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> None:
    from gptjax import io
    from gptjax.pipeline import queries

    ow = queries.open_workdir(args.workdir)
    # Every input is checked before any computation.
    test_id = None if args.test is None else ow.check_test_id(args.test)
    ow.check_k(args.k)
    batches = None
    if args.curriculum is not None:
        batches = read_curriculum(args.curriculum)
        try:
            queries.curriculum_ids(ow, batches)
        except queries.QueryError as err:
            raise queries.QueryError(f"curriculum file {args.curriculum}: {err}") from err
    ow.simulator(args.metric, args.simulator)

    answers: dict[str, Any] = {}
    printed: list[str] = []
    if test_id is not None:
        res = queries.top_influences(
            ow, test_id, args.k, args.metric, args.simulator, tracin=not args.no_tracin
        )
        answers["top_influences"] = res
        printed.append(format_influences(res))
        if ow.relatedness is not None:
            prec = queries.top_k_precision(ow, args.k, args.metric, args.simulator)
            answers["top_k_precision"] = prec
            printed.append(format_precision(prec))
    if batches is not None:
        res = queries.simulate_curriculum(ow, batches, args.metric, args.simulator)
        answers["curriculum"] = res
        printed.append(format_curriculum(res, args.curriculum, test_id))
    if args.mislabels:
        res = queries.mislabel_ranking(ow, args.metric, args.simulator)
        answers["mislabels"] = res
        printed.append(format_mislabels(res, args.k))
    print("\n\n".join(printed))
    if args.json:
        io.atomic_write_json(args.json, plain(answers))
        print(f"\nwrote {args.json}")
    if args.csv:
        write_csv(args.csv, csv_rows(answers))
        print(f"wrote {args.csv}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    quiet_orbax()
    run_reporting_errors(lambda: run(args), debug=args.debug)


if __name__ == "__main__":
    main()
