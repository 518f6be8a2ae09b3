"""The evaluation harness every method is scored by, and the one results table.

All arrays are [R, T+1, N]: R runs, steps 0..T, N test examples. Steps ``start..T`` are
scored (the first ``start`` values are given to every method).

* all-steps MSE / MAE: per (run, test example) trajectory, mean over the scored steps; the
  mean (std) over all trajectories.
* final-step Spearman across test examples, per run; mean (std) over runs.
* LDS (linear datamodeling score): per test example, the Spearman ρ across runs of the
  simulated vs the true final value; mean (std) over test examples (``lds_mean``,
  ``lds_std``; ``across_run_spearman`` is the same mean, kept under its older name). Noisy
  with few runs: use ≥ 16.
* `paired_bootstrap`: "A beats B" from paired per-trajectory errors, with a bootstrap
  interval of the mean difference (`trajectory_mse` gives the per-trajectory errors).

Steps where ``true`` is NaN (unmeasured) are left out of the MSE / MAE.
Spearman of a constant vector is undefined: it is NaN, skipped in the means and counted in
``final_spearman_nan`` / ``across_run_nan`` so a degenerate predictor is visible.
"""

from __future__ import annotations

import csv
import io
import math
import warnings

import numpy as np
from scipy.stats import rankdata

KEYS = (
    "mse_mean",
    "mse_std",
    "mae_mean",
    "mae_std",
    "final_spearman_mean",
    "final_spearman_std",
    "across_run_spearman",
    "lds_mean",
    "lds_std",
)


def spearman(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman ρ along ``axis`` (average ranks for ties); NaN where either side is constant
    or contains non-finite values."""
    a = np.moveaxis(np.asarray(a, np.float64), axis, -1)
    b = np.moveaxis(np.asarray(b, np.float64), axis, -1)
    bad = ~(np.isfinite(a).all(-1) & np.isfinite(b).all(-1))
    a = np.where(np.isfinite(a), a, 0.0)
    b = np.where(np.isfinite(b), b, 0.0)
    ra = rankdata(a, axis=-1)
    rb = rankdata(b, axis=-1)
    ra = ra - ra.mean(-1, keepdims=True)
    rb = rb - rb.mean(-1, keepdims=True)
    num = (ra * rb).sum(-1)
    den = np.sqrt((ra**2).sum(-1) * (rb**2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where((den > 0) & ~bad, num / np.where(den > 0, den, 1.0), np.nan)
    return rho


def lds(pred_final: np.ndarray, true_final: np.ndarray) -> np.ndarray:
    """[N] per test example: Spearman ρ across runs of predicted vs true final values.

    ``pred_final``, ``true_final``: [R, N] (run, test example). Runs whose true value is not
    finite are left out for that example; an example keeps NaN when fewer than 3 runs remain,
    when a remaining prediction is not finite (a diverged method is not excused) or when
    either side is constant across the runs (a curriculum-blind predictor)."""
    pred = np.asarray(pred_final, np.float64)
    true = np.asarray(true_final, np.float64)
    if pred.shape != true.shape or pred.ndim != 2:
        raise ValueError(f"pred {pred.shape} and true {true.shape} must both be [R, N]")
    out = np.full(true.shape[1], np.nan)
    have = np.isfinite(true)
    for n in range(true.shape[1]):
        keep = have[:, n]
        if keep.sum() >= 3:
            out[n] = spearman(pred[keep, n], true[keep, n])
    return out


def trajectory_mse(pred: np.ndarray, true: np.ndarray, start: int = 1) -> np.ndarray:
    """[R, N] all-steps MSE of every (run, test example) trajectory over steps start..T
    (steps where ``true`` is NaN left out) — the per-trajectory errors `evaluate` averages."""
    pred = np.asarray(pred, np.float64)
    true = np.asarray(true, np.float64)
    seen = np.isfinite(true[:, start:])
    err = np.where(seen, pred[:, start:] - np.where(seen, true[:, start:], 0.0), 0.0)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.sum(err**2, axis=1) / np.maximum(seen.sum(axis=1), 1)


def paired_bootstrap(
    err_a: np.ndarray,
    err_b: np.ndarray,
    *,
    n_boot: int = 10_000,
    ci: float = 0.95,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> dict:
    """Mean of the paired differences ``err_a - err_b`` (e.g. per-trajectory MSE of two
    methods on the same trajectories; negative: A has the lower error) and a percentile
    bootstrap interval of that mean (``ci``, seeded).

    Pairs where either error is not finite are dropped (``n_dropped``). With ``groups``
    (same shape, e.g. the run index of each trajectory) whole groups are resampled, which
    respects the correlation of trajectories within a run; otherwise pairs are resampled
    independently. ``a_better`` / ``b_better``: the interval lies below / above zero.
    """
    a = np.asarray(err_a, np.float64).ravel()
    b = np.asarray(err_b, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"err_a {np.shape(err_a)} and err_b {np.shape(err_b)} must match")
    if not 0 < ci < 1 or n_boot < 1:
        raise ValueError("need 0 < ci < 1 and n_boot >= 1")
    g = None if groups is None else np.asarray(groups).ravel()
    if g is not None and g.shape != a.shape:
        raise ValueError(f"groups {np.shape(groups)} must match the errors {np.shape(err_a)}")
    ok = np.isfinite(a) & np.isfinite(b)
    d = a[ok] - b[ok]
    result = {"n": int(d.size), "n_dropped": int(ok.size - ok.sum()), "ci": ci}
    if d.size == 0:
        return result | {
            "mean_diff": math.nan,
            "lo": math.nan,
            "hi": math.nan,
            "a_better": False,
            "b_better": False,
        }
    rng = np.random.default_rng(seed)
    if g is None:
        idx = rng.integers(0, d.size, size=(n_boot, d.size))
        boots = d[idx].mean(axis=1)
    else:
        _, gid = np.unique(g[ok], return_inverse=True)
        sums = np.bincount(gid, weights=d)
        counts = np.bincount(gid).astype(np.float64)
        pick = rng.integers(0, sums.size, size=(n_boot, sums.size))
        boots = sums[pick].sum(axis=1) / counts[pick].sum(axis=1)
    lo, hi = np.quantile(boots, [(1 - ci) / 2, (1 + ci) / 2])
    return result | {
        "mean_diff": float(d.mean()),
        "lo": float(lo),
        "hi": float(hi),
        "a_better": bool(hi < 0),
        "b_better": bool(lo > 0),
    }


def _nanstats(x: np.ndarray) -> tuple[float, float, int]:
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return math.nan, math.nan, int(x.size)
    return float(finite.mean()), float(finite.std()), int(x.size - finite.size)


def evaluate(pred: np.ndarray, true: np.ndarray, start: int = 1) -> dict:
    """Score simulated trajectories ``pred`` against ``true`` over steps start..T."""
    pred = np.asarray(pred, np.float64)
    true = np.asarray(true, np.float64)
    if pred.shape != true.shape or pred.ndim != 3:
        raise ValueError(f"pred {pred.shape} and true {true.shape} must both be [R, T+1, N]")
    r, t1, _ = true.shape
    if not 0 <= start < t1:
        raise ValueError(f"start={start} outside 0..{t1 - 1}")
    # Steps without a true value (metrics measured every few steps) are not scored.
    seen = np.isfinite(true[:, start:])
    err = np.where(seen, pred[:, start:] - np.where(seen, true[:, start:], 0.0), 0.0)
    count = np.maximum(seen.sum(axis=1), 1)
    with np.errstate(over="ignore", invalid="ignore"):
        mse = np.sum(err**2, axis=1) / count  # [R, N]
        mae = np.sum(np.abs(err), axis=1) / count
    final_rho = spearman(pred[:, -1], true[:, -1], axis=-1)  # [R]
    fs_mean, fs_std, fs_nan = _nanstats(final_rho)
    # LDS: per test example across runs (fewer than 3 runs: NaN, no information).
    ar_mean, ar_std, ar_nan = _nanstats(lds(pred[:, -1], true[:, -1]))
    with np.errstate(over="ignore", invalid="ignore"):  # a diverged rollout: inf/nan, reported
        mse_mean, mse_std = float(np.mean(mse)), float(np.std(mse))
        mae_mean, mae_std = float(np.mean(mae)), float(np.std(mae))
    return {
        "mse_mean": mse_mean,
        "mse_std": mse_std,
        "mae_mean": mae_mean,
        "mae_std": mae_std,
        "final_spearman_mean": fs_mean,
        "final_spearman_std": fs_std,
        "across_run_spearman": ar_mean,
        "lds_mean": ar_mean,
        "lds_std": ar_std,
        "final_spearman_nan": fs_nan,
        "across_run_nan": ar_nan,
        "n_runs": int(r),
        "n_trajectories": int(mse.size),
        "n_nonfinite": int((~np.isfinite(pred[:, start:]) & seen).sum()),
    }


def persistence(true: np.ndarray, start: int = 1) -> np.ndarray:
    """ŷ_t = the last given value y_{start-1} (y_0 for start=1) for every simulated step."""
    true = np.asarray(true)
    pred = np.repeat(true[:, start - 1 : start], true.shape[1], axis=1).copy()
    pred[:, :start] = true[:, :start]
    return pred


def mean_trajectory(train_true: np.ndarray, like: np.ndarray, start: int = 1) -> np.ndarray:
    """ŷ_t[n] = mean over the training runs of y_t[n]; ignores the curriculum entirely.

    ``like`` ([R, T+1, N], the runs to predict) gives the shape and the given values.
    """
    like = np.asarray(like)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN steps stay NaN
        mean = np.nanmean(np.asarray(train_true, np.float64), axis=0)
    if mean.shape != like.shape[1:]:
        raise ValueError(f"training runs {mean.shape} and target runs {like.shape[1:]} differ")
    pred = np.broadcast_to(mean, like.shape).astype(like.dtype).copy()
    pred[:, :start] = like[:, :start]
    return pred


NOT_APPLICABLE_REASON = "gradient influence predicts changes in loss only"


def not_applicable(reason: str = NOT_APPLICABLE_REASON) -> dict:
    """A results row for a method that does not apply to a metric: NaN numbers flagged
    ``not_applicable`` (tables show the method with the reason, never as a score)."""
    return {k: math.nan for k in KEYS} | {"not_applicable": True, "reason": reason}


def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "nan"
    ax = abs(x)
    if ax != 0 and (ax < 10**-digits or ax >= 1e5):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}f}"


def results_table(rows: dict[str, dict]) -> str:
    """Markdown table, one row per method: all-steps MSE and MAE (mean (std)), final-step ρ
    (mean (std)), LDS (mean (std) over test examples; rows from before LDS was recorded show
    their across-run ρ) and the seconds it took where recorded. Rows flagged
    ``not_applicable`` are listed below the table with their reason; a row's ``note`` (a
    simulator that kept its initial state, a fallback) is printed below the table too."""
    timed = any("seconds" in m for m in rows.values())
    head = "| method | all-steps MSE | all-steps MAE | final-step ρ | LDS (across-run ρ) |"
    lines = [head + (" seconds |" if timed else ""), "|---|---|---|---|---|" + ("---|" * timed)]
    skipped, notes = [], []
    for name, m in rows.items():
        if m.get("not_applicable"):
            skipped.append((name, m.get("reason", NOT_APPLICABLE_REASON)))
            continue
        if "lds_mean" in m:
            lds_cell = f"{_fmt(m['lds_mean'], 3)} ({_fmt(m.get('lds_std'), 3)})"
        else:
            lds_cell = _fmt(m.get("across_run_spearman"), 3)
        mark = " *" if m.get("note") else ""
        line = (
            f"| {name}{mark} | {_fmt(m['mse_mean'])} ({_fmt(m['mse_std'])}) "
            f"| {_fmt(m['mae_mean'])} ({_fmt(m['mae_std'])}) "
            f"| {_fmt(m['final_spearman_mean'], 3)} ({_fmt(m['final_spearman_std'], 3)}) "
            f"| {lds_cell} |"
        )
        if timed:
            line += f" {m['seconds']:.1f} |" if "seconds" in m else " |"
        lines.append(line)
        if m.get("note"):
            notes.append(f"\n\\* {name}: {m['note']}")
    lines += notes
    for reason in sorted({r for _, r in skipped}):
        names = ", ".join(n for n, r in skipped if r == reason)
        lines.append(f"\nNot applicable: {names} ({reason}).")
    return "\n".join(lines) + "\n"


def results_csv(rows: dict[str, dict]) -> str:
    """The same rows as CSV with every numeric key."""
    keys = list(KEYS) + sorted({k for m in rows.values() for k in m} - set(KEYS))
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["method", *keys])
    for name, m in rows.items():
        writer.writerow([name, *[m.get(k, "") for k in keys]])
    return buf.getvalue()
