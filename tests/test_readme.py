"""README.md is short, opens with the two commands, and links every docs page; no relative
link in README.md or docs/*.md is broken."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))

# [text](target): the target up to a space, ")" or "#" (an anchor is not a file).
LINK = re.compile(r"\]\(([^)\s#]*)(#[^)\s]*)?\)")


def relative_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # not inside code blocks
    links = [m.group(1) for m in LINK.finditer(text)]
    return [t for t in links if t and not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def test_readme_opens_with_the_two_commands():
    text = README.read_text()
    blocks = text.split("```bash\n")[1:3]
    assert "python -m gptjax.main --config configs/demo.py" in blocks[0]
    assert "python -m pytest" in blocks[1]
    test_command = blocks[1].split("```")[0].strip()
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_readme_is_short():
    lines = len(README.read_text().splitlines())
    assert lines < 250, f"README.md has {lines} lines; move detail into docs/"


def test_every_docs_page_is_linked_from_the_readme():
    assert DOCS, "docs/ has no pages"
    linked = set(relative_links(README))
    missing = [p.name for p in DOCS if f"docs/{p.name}" not in linked]
    assert not missing, f"README.md does not link {missing}"


def test_relative_links_point_at_existing_files():
    broken = []
    for page in [README, *DOCS]:
        for target in relative_links(page):
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, "broken links: " + ", ".join(broken)


def test_readme_demo_table_is_rendered_from_its_results_file():
    """The demo table is not typed by hand: it is seeds_table() of the committed results of
    `python -m gptjax.pipeline.seeds` (see the README for the command)."""
    import json
    import re

    from gptjax.pipeline.seeds import seeds_table

    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- demo-table: (\S+) -->\n(.*?)<!-- /demo-table -->", text, re.S)
    assert match, "README.md has no <!-- demo-table: FILE --> ... <!-- /demo-table --> block"
    record = json.loads((ROOT / match.group(1)).read_text())
    assert len(record["seeds"]) >= 3
    assert match.group(2) == seeds_table(record)


SMOLLM2 = "SmolLM2-135M (partial FT)"  # experiments.report's reading group

# The README's pooled SmolLM2 sentence: its task list, k of n seeds, ratio and interval.
POOLED_SENTENCE = re.compile(
    r"\(partial fine-tuning; ([^)]*)\) it is below the mean trajectory on (\d+) of (\d+) "
    r"seeds, loss MSE ratio ([\d.]+) \[([\d.]+), ([\d.]+)\]"
)


def pooled_sentence() -> list[str]:
    match = POOLED_SENTENCE.search(" ".join(README.read_text().split()))
    assert match, "README.md lost its pooled SmolLM2 sentence"
    return list(match.groups())


def smollm2_snapshots():
    from experiments import report

    records = report.load_records(ROOT, report.EXPERIMENTS, report.SNAPSHOTS)
    return report.reading_experiments(report.EXPERIMENTS, records)[SMOLLM2], records


def test_readme_pooled_smollm2_sentence_matches_the_snapshots():
    """The README's pooled SmolLM2 sentence (kernel below the mean trajectory on k of n seeds,
    ratio and interval) is typed prose: it must say what experiments.orderings computes from
    the committed snapshots, so a new seed that changes the figures fails here until it is
    mended."""
    from experiments import orderings, report

    _, wins, pairs, *stated = pooled_sentence()
    pooled, records = smollm2_snapshots()
    per_seed = [records[e.key]["per_seed"] for e in pooled]
    logs = orderings.paired_log_ratios(per_seed, report.KERNEL, "mean_trajectory")
    mean, low, high = orderings.ratio_interval(logs)
    assert (int(wins), int(pairs)) == (int((logs < 0).sum()), logs.size)
    # As EXPERIMENTS.md prints them (orderings_table); an interval of NaNs never matches.
    assert stated == [f"{v:.2f}" for v in (mean, low, high)]


def test_readme_pooled_smollm2_sentence_names_the_tasks_it_pools():
    """The same sentence's list of tasks is prose too: every SmolLM2 task with kernel rows is
    named, and one whose kernel rows cover only some of its seeds is named with "seed" (as in
    "the mixture's seed 0"), so adding a task's seeds fails here until the list is mended."""
    from experiments import orderings, report

    named = pooled_sentence()[0]
    pooled, records = smollm2_snapshots()
    assert pooled, "no SmolLM2 snapshot"
    for experiment in pooled:
        per_seed = records[experiment.key]["per_seed"]
        covered = orderings.paired_log_ratios([per_seed], report.KERNEL, "mean_trajectory").size
        # The label's first word (SST-2, RTE, WMT16, mixture) is the README's name for it.
        short = experiment.label.split()[0]
        if covered == 0:
            assert short not in named, f"README pools {short}, which has no kernel rows"
            continue
        assert short in named, f"README does not name {short} ({covered} seeds pooled)"
        partial = covered < len(per_seed)
        assert (f"{short}'s seed" in named) == partial, (
            f"{short}: kernel rows on {covered} of {len(per_seed)} seeds, README says {named!r}"
        )
