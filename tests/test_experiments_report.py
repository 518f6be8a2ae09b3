"""experiments.report renders EXPERIMENTS.md from results JSON files: checked on synthetic
workdirs whose figures are known, so every cell can be recomputed here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from experiments import report


def row(mse, mse_std, rho, lds=None, across=None, **extra):
    r = {
        "mse_mean": mse,
        "mse_std": mse_std,
        "mae_mean": mse / 2,
        "mae_std": mse_std / 2,
        "final_spearman_mean": rho,
        "final_spearman_std": 0.1,
        "across_run_spearman": across if across is not None else float("nan"),
    }
    if lds is not None:
        r |= {"lds_mean": lds, "lds_std": 0.2}
    return r | extra


def write_seed(root: Path, seed: int, gpt_mse: float, lds: float | None = 0.5) -> None:
    results = root / f"seed_{seed}" / "results"
    results.mkdir(parents=True)
    simulators = {
        "loss": {
            "gptfluence": row(gpt_mse, 0.01, 0.8, lds=lds),
            "simfluence": row(0.3, 0.02, 0.7, lds=lds, note="kept its initial state"),
        }
    }
    baselines = {
        "loss": {
            "persistence": row(1.0, 0.5, 0.4, across=0.25),
            "tracin_cp_all": row(2.0, 1.0, 0.3, lds=0.1, seconds=10.0 + seed),
        },
        "bleu": {
            "tracin_cp_all": {
                k: float("nan") for k in ("mse_mean", "mse_std", "mae_mean", "mae_std")
            }
            | {"not_applicable": True, "reason": "gradient influence predicts changes in loss"},
        },
    }
    (results / "simulators.json").write_text(json.dumps({"results": simulators}))
    (results / "baselines.json").write_text(json.dumps({"results": baselines}))
    (results / "timings.json").write_text(json.dumps({"collect": 100.0 + seed, "simulate": 20.0}))
    (results / "simulators_loss.png").write_bytes(b"\x89PNG fake")


@pytest.fixture
def repo(tmp_path):
    wd = tmp_path / "workdirs" / "finetune_sst2"
    write_seed(wd, 0, 0.10)
    write_seed(wd, 1, 0.20)
    write_seed(wd, 2, 0.30)
    return tmp_path


def sst2_section(text: str) -> str:
    start = text.index("### Fine-tuning: SST-2")
    return text[start : text.index("### Fine-tuning: RTE")]


def test_harvest_and_render_the_paper_layout(repo):
    done = report.harvest(repo, report.EXPERIMENTS, report.SNAPSHOTS)
    # The ladder's d64 rung is the SST-2 experiment's config: it reads the same workdir.
    assert done == ["finetune_sst2", "ablation_model_size/d64"]
    snapshot = json.loads((repo / report.SNAPSHOTS / "finetune_sst2.json").read_text())
    assert sorted(snapshot["per_seed"]) == ["0", "1", "2"]
    assert (repo / report.SNAPSHOTS / "finetune_sst2" / "simulators_loss.png").is_file()

    text = report.render(repo, report.EXPERIMENTS, report.SNAPSHOTS)
    section = sst2_section(text)
    mses = [0.10, 0.20, 0.30]
    expected = f"{np.mean(mses):.4f} (0.0100) ± {np.std(mses):.4f}"
    assert f"| GPTfluence | {expected} |" in section
    # MAE is half the MSE here; ρ and LDS are the same for every seed (std 0).
    assert f"{np.mean(mses) / 2:.4f} (0.0050) ± {np.std(mses) / 2:.4f}" in section
    assert "| 0.800 (0.100) ± 0.000 | 0.500 (0.200) ± 0.000 |" in section
    # Rows in the paper's order: GPTfluence, Simfluence, TracIn-CP, ..., persistence.
    order = [section.index(f"| {m} ") for m in ("GPTfluence", "Simfluence", "persistence")]
    assert order == sorted(order)
    assert section.index("| TracIn-CP (all steps) |") < section.index("| persistence |")
    # Rows recorded before the LDS key: the across-run ρ, without a spread.
    assert "| persistence | 1.0000 (0.5000) ± 0.0000 |" in section
    assert section.rstrip().count("0.250 ± 0.000") == 1
    # A method that does not apply to a metric is named with its reason, never scored.
    assert "Not applicable: TracIn-CP (all steps) (gradient influence" in section
    assert "3 seed(s) (0, 1, 2)" in section
    assert "| Simfluence \\* | 0.3000 (0.0200)" in section
    assert "\\* Simfluence: kept its initial state" in section
    # GPTfluence's MSE (0.1, 0.2, 0.3) against Simfluence's 0.3 in every seed: 2 wins of 3.
    assert (
        "GPTfluence has the lower all-steps MSE (paired by seed) than Simfluence in 2 of 3, "
        "TracIn-CP (all steps) in 3 of 3, persistence in 3 of 3 seed(s)."
    ) in section
    assert "wall time: 121 s per seed (collect 101 s, simulate 20 s" in section
    assert "(experiments/results/finetune_sst2/simulators_loss.png)" in section
    # Experiments without results are listed with their command, numbers never invented.
    rte = text[text.index("### Fine-tuning: RTE") :]
    rte = rte[: rte.index("###", 3)]
    assert "*not run yet.*" in rte
    assert "python -m gptjax.pipeline.seeds --config configs/finetune_rte.py" in rte
    assert "2 of " in text and "experiments have results" in text
    assert f"| d64 | GPTfluence | {expected} |" in text
    assert "| Fine-tuning: SST-2 | 3 | – | 101 | 20 | – |" in text
    assert "| experiment | TracIn-CP (all steps) |" in text
    assert "| Fine-tuning: SST-2 | 11.0 |" in text


def test_one_seed_has_no_spread_over_seeds(tmp_path):
    write_seed(tmp_path / "workdirs" / "finetune_rte", 4, 0.25, lds=None)
    report.harvest(tmp_path, report.EXPERIMENTS, report.SNAPSHOTS)
    text = report.render(tmp_path, report.EXPERIMENTS, report.SNAPSHOTS)
    rte = text[text.index("### Fine-tuning: RTE") : text.index("### Fine-tuning: BoolQ")]
    assert "| GPTfluence | 0.2500 (0.0100) | 0.1250 (0.0050) | 0.800 (0.100) | – |" in rte
    assert "1 seed(s) (4)" in rte
    assert "*not run yet.*" in text[text.index("### Fine-tuning: SST-2") :]


def test_ablation_summary_lists_every_variant(tmp_path):
    write_seed(tmp_path / "workdirs" / "ablation_markov_order" / "order_3", 0, 0.05)
    report.harvest(tmp_path, report.EXPERIMENTS, report.SNAPSHOTS)
    text = report.render(tmp_path, report.EXPERIMENTS, report.SNAPSHOTS)
    section = text[text.index("## Ablation: Markov order") : text.index("## Ablation: encoder")]
    assert "| n = 3 | GPTfluence | 0.0500 (0.0100) |" in section
    for n in (1, 2, 5, 10):
        assert f"| n = {n} | not run yet |" in section
        assert f"--config configs/ablation_markov_order.py:{n} " in section


def test_ablation_curves_are_drawn_for_ablations_with_results(tmp_path, monkeypatch):
    write_seed(tmp_path / "workdirs" / "ablation_markov_order" / "order_3", 0, 0.05)
    write_seed(tmp_path / "workdirs" / "ablation_markov_order" / "order_3", 1, 0.07)
    drawn = {}

    def record(path, title, variants, series):
        drawn[title] = (path, variants, series)

    monkeypatch.setattr(report.figures, "ablation_curve", record)
    assert report.main(["--repo", str(tmp_path)]) == 0
    assert set(drawn) == {"Markov order"}  # the other ablations have no results
    path, variants, series = drawn["Markov order"]
    assert path == tmp_path / "experiments/results/ablation_markov_order/ablation_curve.png"
    assert variants == ["n = 1", "n = 2", "n = 3", "n = 5", "n = 10"]
    assert series["GPTfluence"][:2] == [None, None]
    assert series["GPTfluence"][2] == pytest.approx((0.06, 0.01))  # mean, std over seeds
    text = (tmp_path / "EXPERIMENTS.md").read_text()
    link = "![ablation curve](experiments/results/ablation_markov_order/ablation_curve.png)"
    assert text.count("![ablation curve]") == 1 and link in text


def test_ablation_curve_png_is_written(tmp_path):
    path = tmp_path / "curve.png"
    report.figures.ablation_curve(path, "t", ["a", "b"], {"m": [(0.1, 0.01), None]})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mislabel_record_renders(tmp_path):
    results = tmp_path / "workdirs" / "mislabel_sst2" / "results"
    results.mkdir(parents=True)
    curve = {"checked": [0.0, 0.5, 1.0], "found": [0.0, 0.8, 1.0]}
    record = {
        "pool_size": 100,
        "flipped_total": 40,
        "report_fractions": [0.5],
        "curves": {"GPTfluence self-influence": curve},
        "retrain": [
            {"ranking": "no fix", "checked": 0.0, "accuracy": 0.6},
            {"ranking": "TracIn self-influence", "checked": 0.2, "accuracy": 0.65},
            {"ranking": "all labels fixed", "checked": 1.0, "accuracy": 0.6},
        ],
        "seconds": {"rankings": 12.0, "retrain": 30.0},
    }
    (results / "mislabel.json").write_text(json.dumps(record))
    (results / "mislabel_curve.png").write_bytes(b"\x89PNG fake")
    assert report.harvest(tmp_path, report.EXPERIMENTS, report.SNAPSHOTS) == ["mislabel_sst2"]
    text = report.render(tmp_path, report.EXPERIMENTS, report.SNAPSHOTS)
    assert "40 of 100 pool labels flipped" in text
    assert "| GPTfluence self-influence | 0.800 |" in text
    assert "| TracIn self-influence | 20% | 0.650 | 1 |" in text
    assert "cannot tell the rankings apart" in text  # the oracle fix gains nothing here
    assert "then rankings 12 s; then retrain 30 s." in text
    assert "![mislabel_curve](experiments/results/mislabel_sst2/mislabel_curve.png)" in text
    assert (tmp_path / report.SNAPSHOTS / "mislabel_sst2" / "mislabel_curve.png").is_file()


def test_mislabel_seeds_are_summarised_and_paired_with_random(tmp_path):
    """Seeds from ``--seeds`` workdirs join an earlier snapshot's seed; each cell is the mean
    ± std over seeds, and each ranking is compared with random seed by seed."""
    root = tmp_path / "workdirs" / "mislabel_sst2"

    def write(results: Path, found: float, rand: float, acc: float) -> None:
        results.mkdir(parents=True)
        record = {
            "pool_size": 100,
            "flipped_total": 40,
            "report_fractions": [0.5],
            "curves": {
                "GPTfluence self-influence": {"checked": [0, 0.5, 1], "found": [0, found, 1]},
                "random (10 shuffles)": {"checked": [0, 0.5, 1], "found": [0, rand, 1]},
            },
            "retrain": [
                {"ranking": "no fix", "checked": 0.0, "accuracy": 0.5},
                {"ranking": "all labels fixed", "checked": 1.0, "accuracy": acc},
            ],
        }
        (results / "mislabel.json").write_text(json.dumps(record))

    write(root / "results", 0.8, 0.5, 0.7)  # an earlier single run: the config's seed 0
    report.harvest(tmp_path, report.EXPERIMENTS, report.SNAPSHOTS)
    for child in sorted((root / "results").iterdir()):
        child.unlink()
    (root / "results").rmdir()
    write(root / "seed_1" / "results", 0.6, 0.5, 0.9)
    write(root / "seed_2" / "results", 0.4, 0.5, 0.8)
    report.harvest(tmp_path, report.EXPERIMENTS, report.SNAPSHOTS)
    snapshot = json.loads((tmp_path / report.SNAPSHOTS / "mislabel_sst2.json").read_text())
    assert list(snapshot["mislabel_per_seed"]) == ["0", "1", "2"]
    text = report.render(tmp_path, report.EXPERIMENTS, report.SNAPSHOTS)
    assert "3 seed(s) (0, 1, 2)" in text
    found = [0.8, 0.6, 0.4]
    assert f"| GPTfluence self-influence | {np.mean(found):.3f} ± {np.std(found):.3f} |" in text
    diff = [0.3, 0.1, -0.1]
    assert f"| GPTfluence self-influence | {np.mean(diff):.3f} ± {np.std(diff):.3f} (2/3) |" in text
    acc = [0.7, 0.9, 0.8]
    assert f"| all labels fixed | 100% | {np.mean(acc):.3f} ± {np.std(acc):.3f} | 3 |" in text
    assert "cannot tell the rankings apart" not in text
    assert "--seeds 0,1,2 --retrain_fractions 0.2,0.4" in text


def test_check_flags_a_stale_file(repo, capsys):
    out = repo / "EXPERIMENTS.md"
    args = ["--repo", str(repo), "--out", str(out)]
    (repo / "configs").mkdir()
    assert report.main(args) == 0
    assert report.main([*args, "--check"]) == 0
    out.write_text(out.read_text().replace("GPTfluence", "GPTfluenze", 1))
    assert report.main([*args, "--check"]) == 1
    assert "out of date" in capsys.readouterr().err


def test_discovered_configs_are_listed(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "other_sst2.py").write_text(
        '"""SmolLM2.\n\n    python -m gptjax.pipeline.seeds --config configs/other_sst2.py \\\n'
        '        --seeds 0,1 --workdir workdirs/other_sst2 --out x.json\n"""\n'
    )
    (tmp_path / "configs" / "demo.py").write_text('"""python -m gptjax.main --config x"""\n')
    found = report.discovered(tmp_path, report.EXPERIMENTS)
    assert [(e.key, e.workdir, e.seeds) for e in found] == [
        ("other_sst2", "workdirs/other_sst2", "0,1")
    ]


def test_experiments_md_matches_its_snapshots():
    """Every experiment block of the committed EXPERIMENTS.md is what the committed snapshots
    render: its numbers come from results files, none typed by hand."""
    repo = Path(__file__).resolve().parent.parent
    text = (repo / "EXPERIMENTS.md").read_text()
    for e in report.EXPERIMENTS:
        path = repo / report.SNAPSHOTS / f"{e.key}.json"
        record = json.loads(path.read_text()) if path.is_file() else None
        block = "\n".join(report.render_experiment(e, record))
        if record is None and e.section.startswith("Ablation"):
            assert e.command in text, f"{e.key}: its command is missing"
            continue
        assert block in text, f"{e.key}: EXPERIMENTS.md differs; run python -m experiments.report"


def test_summary_counts_the_seeds_where_each_ordering_holds(repo):
    # GPTfluence MSE 0.10 / 0.20 / 0.30 against Simfluence's 0.3 in every seed: below it in
    # seeds 0 and 1 only (0.30 < 0.3 is false); below TracIn-CP's 2.0 in all three.
    report.harvest(repo, report.EXPERIMENTS, report.SNAPSHOTS)
    text = report.render(repo, report.EXPERIMENTS, report.SNAPSHOTS)
    summary = text[text.index("## Summary") : text.index("## Fine-tuning")]
    line = next(x for x in summary.splitlines() if x.startswith("| Fine-tuning: SST-2 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1:7] == ["3", "0.2000", "0.3000", "–", "GPTfluence", "2 of 3"]
    assert cells[7:9] == ["3 of 3", "–"]  # no mean-trajectory row: nothing to count
    assert cells[9:11] == ["0.500", "0.100"]
    assert cells[11:] == ["–", "–", "–"]  # run before the kernel simulator existed
    assert "RTE" not in summary  # experiments without results have no row


def test_summary_has_the_kernel_simulator_beside_the_mean_trajectory(repo):
    # gradient_kernel MSE 0.05 in every seed, the mean trajectory's 0.04 / 0.06 / 0.08: the
    # kernel is the lower in seeds 1 and 2.
    path_kernel = "Adam-preconditioned gradient kernel averaged over steps [0, 3] of the mean path"
    for seed, mean_mse in enumerate((0.04, 0.06, 0.08)):
        path = repo / "workdirs" / "finetune_sst2" / f"seed_{seed}" / "results"
        sims = json.loads((path / "simulators.json").read_text())
        kernel_row = row(0.05, 0.01, 0.9, lds=0.7) | {"kernel": path_kernel}
        if seed == 2:  # the first kernel in one seed: the summary marks the experiment
            kernel_row["kernel"] = "base model's gradient kernel, projected to 8192 dims"
        sims["results"]["loss"]["gradient_kernel"] = kernel_row
        sims["results"]["loss"]["mean_trajectory"] = row(mean_mse, 0.01, 0.9, lds=None)
        (path / "simulators.json").write_text(json.dumps(sims))
    report.harvest(repo, report.EXPERIMENTS, report.SNAPSHOTS)
    text = report.render(repo, report.EXPERIMENTS, report.SNAPSHOTS)
    summary = text[text.index("## Summary") : text.index("## Fine-tuning")]
    line = next(x for x in summary.splitlines() if x.startswith("| Fine-tuning: SST-2 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[5] == "gradient kernel (no MLPs)"  # the lowest mean MSE
    assert cells[11:] == ["0.0500 †", "2 of 3", "0.700"]
    assert (
        report.first_kernel({"0": {"loss": {"gradient_kernel": {"kernel": path_kernel}}}}) is False
    )
    assert report.first_kernel({"0": {"loss": {"gradient_kernel": {"mse_mean": 1.0}}}}) is True
    assert "gradient kernel (no MLPs) has the lower all-steps MSE" in sst2_section(text)


def test_harvest_keeps_earlier_seeds_whose_workdirs_are_gone(repo):
    report.harvest(repo, report.EXPERIMENTS, report.SNAPSHOTS)
    # A later machine holds only seed 1 (re-run, with other figures) and a new seed 3.
    wd = repo / "workdirs" / "finetune_sst2"
    for seed in (0, 1, 2):
        for f in sorted((wd / f"seed_{seed}").rglob("*"), reverse=True):
            f.unlink() if f.is_file() else f.rmdir()
        (wd / f"seed_{seed}").rmdir()
    write_seed(wd, 1, 0.50)
    write_seed(wd, 3, 0.40)
    report.harvest(repo, report.EXPERIMENTS, report.SNAPSHOTS)
    snapshot = json.loads((repo / report.SNAPSHOTS / "finetune_sst2.json").read_text())
    assert list(snapshot["per_seed"]) == ["0", "1", "2", "3"]
    mse = {s: r["loss"]["gptfluence"]["mse_mean"] for s, r in snapshot["per_seed"].items()}
    assert mse == {"0": 0.10, "1": 0.50, "2": 0.30, "3": 0.40}
    assert snapshot["stage_seconds"]["3"]["collect"] == 103.0
    section = sst2_section(report.render(repo, report.EXPERIMENTS, report.SNAPSHOTS))
    assert "4 seed(s) (0, 1, 2, 3)" in section
    # Seed 0's plots stay: its workdir is gone, and the plots are the lowest seed's.
    assert snapshot["plots_seed"] == "0"
    png = repo / report.SNAPSHOTS / "finetune_sst2" / "simulators_loss.png"
    assert png.read_bytes() == b"\x89PNG fake"
    assert "Plots (seed 0, first test run)" in section


def test_harvest_takes_the_plots_of_a_lower_seed_that_appears(repo):
    wd = repo / "workdirs" / "finetune_sst2"
    for seed in (0, 1):
        for f in sorted((wd / f"seed_{seed}").rglob("*"), reverse=True):
            f.unlink() if f.is_file() else f.rmdir()
        (wd / f"seed_{seed}").rmdir()
    report.harvest(repo, report.EXPERIMENTS, report.SNAPSHOTS)  # seed 2 only
    write_seed(wd, 0, 0.10)
    (wd / "seed_0" / "results" / "simulators_loss.png").write_bytes(b"\x89PNG seed 0")
    report.harvest(repo, report.EXPERIMENTS, report.SNAPSHOTS)
    snapshot = json.loads((repo / report.SNAPSHOTS / "finetune_sst2.json").read_text())
    assert snapshot["plots_seed"] == "0"
    png = repo / report.SNAPSHOTS / "finetune_sst2" / "simulators_loss.png"
    assert png.read_bytes() == b"\x89PNG seed 0"


def test_a_metric_recorded_by_some_seeds_only_says_which(repo):
    wd = repo / "workdirs" / "finetune_sst2" / "seed_0" / "results"
    rows = json.loads((wd / "simulators.json").read_text())
    rows["results"]["rougeL"] = {"gptfluence": row(0.01, 0.001, 0.5)}
    (wd / "simulators.json").write_text(json.dumps(rows))
    report.harvest(repo, report.EXPERIMENTS, report.SNAPSHOTS)
    section = sst2_section(report.render(repo, report.EXPERIMENTS, report.SNAPSHOTS))
    assert "**rougeL** (seed(s) 0 only: the others did not record it)" in section
    assert "**loss**\n" in section


def test_stage_times_say_what_they_count(repo):
    """Old workdirs kept each stage's last invocation; new ones (the StageTimer's own file)
    sum every invocation, and the line names a resumed stage and one that shared the
    machine."""
    report.harvest(repo, report.EXPERIMENTS, report.SNAPSHOTS)
    old = sst2_section(report.render(repo, report.EXPERIMENTS, report.SNAPSHOTS))
    assert "each stage's last invocation: a resumed stage counts its last part only" in old

    def invocation(seconds, load):
        return {"seconds": seconds, "completed": True, "load_1m": load, "cpus": 2}

    def write(seed):
        collect = [invocation(60.0, 1.9), invocation(40.0 + seed, 2.1)][: 2 if seed == 1 else 1]
        simulate = [invocation(20.0, 4.5 if seed == 2 else 2.0)]
        timings = {"collect": {"invocations": collect}, "simulate": {"invocations": simulate}}
        path = repo / "workdirs" / "finetune_sst2" / f"seed_{seed}" / "results" / "timings.json"
        path.write_text(json.dumps(timings))

    write(1)  # one seed re-run since: the line says which seeds count what
    report.harvest(repo, report.EXPERIMENTS, report.SNAPSHOTS)
    mixed = sst2_section(report.render(repo, report.EXPERIMENTS, report.SNAPSHOTS))
    assert (
        "seed(s) 1: each stage summed over its invocations; seed(s) 0, 2: each stage's last "
        "invocation: a resumed stage counts its last part only; seed 1 collect in 2 parts)"
    ) in mixed
    write(0)
    write(2)
    report.harvest(repo, report.EXPERIMENTS, report.SNAPSHOTS)
    snapshot = json.loads((repo / report.SNAPSHOTS / "finetune_sst2.json").read_text())
    assert snapshot["stage_runs"]["1"]["collect"]["invocations"] == 2
    assert snapshot["stage_seconds"]["1"]["collect"] == 101.0
    new = sst2_section(report.render(repo, report.EXPERIMENTS, report.SNAPSHOTS))
    assert (
        "each stage summed over its invocations; seed 1 collect in 2 parts; "
        "seed 2 simulate beside other jobs (load 4.5))"
    ) in new
    # (60 + 101 + 60) / 3 collect, 20 simulate.
    assert f"wall time: {(60 + 101 + 60) / 3 + 20:.0f} s per seed (collect 74 s" in new


def test_a_method_some_seeds_did_not_run_is_marked_with_its_seeds(repo):
    # Seeds 0 and 1 were collected again with what Grad-Dot and the kernel need; seed 2 was
    # not: their rows are means over 2 seeds and say so, in the section and the summary.
    for seed in (0, 1):
        path = repo / "workdirs" / "finetune_sst2" / f"seed_{seed}" / "results"
        base = json.loads((path / "baselines.json").read_text())
        base["results"]["loss"]["grad_dot"] = row(3.0 + seed, 1.0, 0.2, lds=-0.1)
        (path / "baselines.json").write_text(json.dumps(base))
        sims = json.loads((path / "simulators.json").read_text())
        sims["results"]["loss"]["gradient_kernel"] = row(0.01 * (seed + 1), 0.01, 0.9, lds=0.8)
        sims["results"]["loss"]["gradient_kernel"]["kernel"] = "Adam-preconditioned"
        (path / "simulators.json").write_text(json.dumps(sims))
    report.harvest(repo, report.EXPERIMENTS, report.SNAPSHOTS)
    text = report.render(repo, report.EXPERIMENTS, report.SNAPSHOTS)
    section = sst2_section(text)
    grad_dot = next(x for x in section.splitlines() if x.startswith("| Grad-Dot"))
    assert grad_dot.startswith("| Grad-Dot ‡ | 3.5000 (1.0000) ± 0.5000 |")
    assert "‡ Grad-Dot: over seed(s) 0, 1 only (2 of 3)" in section
    gpt = next(x for x in section.splitlines() if x.startswith("| GPTfluence"))
    assert "‡" not in gpt
    summary = text[text.index("## Summary") : text.index("## Fine-tuning")]
    line = next(x for x in summary.splitlines() if x.startswith("| Fine-tuning: SST-2 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[11] == "0.0150 ‡"
    # The kernel's mean over 2 seeds is the lowest, but not comparable: the lowest of the
    # methods every seed ran is named.
    assert cells[5] == "GPTfluence"


def add_grad_dot(repo: Path, seed: int) -> None:
    path = repo / "workdirs" / "finetune_sst2" / f"seed_{seed}" / "results" / "baselines.json"
    base = json.loads(path.read_text())
    base["results"]["loss"]["grad_dot"] = row(3.0, 1.0, 0.2, lds=-0.1)
    path.write_text(json.dumps(base))


def test_stage_times_name_the_seeds_that_ran_fewer_methods(repo):
    # Seed 1 alone ran Grad-Dot (its baselines stage did more): the wall-time line and the
    # cost table say the means mix the two kinds of seed, and which seeds lack what.
    add_grad_dot(repo, 1)
    report.harvest(repo, report.EXPERIMENTS, report.SNAPSHOTS)
    record = json.loads((repo / report.SNAPSHOTS / "finetune_sst2.json").read_text())
    assert report.fewer_methods(record) == {"0": ["grad_dot"], "2": ["grad_dot"]}
    text = report.render(repo, report.EXPERIMENTS, report.SNAPSHOTS)
    assert (
        "seed 0 ran without Grad-Dot, so its simulate and baselines times are not like the "
        "others'; seed 2 ran without Grad-Dot"
    ) in sst2_section(text)
    cost = text[text.index("| experiment | seeds | prepare (s)") :]
    assert "\n| Fine-tuning: SST-2 ¶ | 3 |" in cost
    assert "\n¶ Its seeds ran different method sets" in cost

    for seed in (0, 2):  # every seed with the same methods: no note, no mark
        add_grad_dot(repo, seed)
    report.harvest(repo, report.EXPERIMENTS, report.SNAPSHOTS)
    record = json.loads((repo / report.SNAPSHOTS / "finetune_sst2.json").read_text())
    assert report.fewer_methods(record) == {}
    text = report.render(repo, report.EXPERIMENTS, report.SNAPSHOTS)
    assert "ran without" not in text and "¶" not in text


def test_a_note_that_holds_on_some_seeds_names_them():
    """An early stop at the initial state on seeds 0 and 2 must not read as holding on all
    three; a note every seed carries stays unqualified."""
    early = "kept its initial state"
    per_seed = {
        str(s): {
            "loss": {
                "gradient_kernel": row(0.1, 0.01, 0.9, lds=0.7, note=early if s != 1 else None),
                "simfluence": row(0.3, 0.02, 0.7, lds=0.1, note="refit"),
            }
        }
        for s in range(3)
    }
    table = report.method_table(report.summarise(per_seed)["loss"])
    assert f"\\* gradient kernel (no MLPs) (seeds 0, 2 only): {early}" in table
    assert "\\* Simfluence: refit" in table
    assert "| gradient kernel (no MLPs) \\* |" in table
