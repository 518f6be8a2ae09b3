"""Assemble README.md from the docs/ sections (run after editing any of them):

    python docs/build_readme.py

tests/test_readme.py fails when README.md is out of date.
"""

from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).resolve().parent
# (file, heading levels to add); each section file starts at "#" or "##".
PARTS = [
    ("_head.md", 0),
    ("_demo.md", 0),
    ("models.md", 1),
    ("tasks.md", 0),
    ("simulator.md", 1),
    ("baselines.md", 1),
    ("_benchmarks.md", 0),
]


def demote(text: str, levels: int) -> str:
    out, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and levels and line.startswith("#"):
            line = "#" * levels + line
        out.append(line)
    return "\n".join(out).strip() + "\n"


def build() -> str:
    return "\n".join(demote((DOCS / name).read_text(), levels) for name, levels in PARTS)


if __name__ == "__main__":
    (DOCS.parent / "README.md").write_text(build())
