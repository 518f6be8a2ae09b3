"""The evaluation harness every method is scored by, and the one results table.

All arrays are [R, T+1, N]: R runs, steps 0..T, N test examples. Steps ``start..T`` are
scored (the first ``start`` values are given to every method).

* all-steps MSE / MAE: per (run, test example) trajectory, mean over the scored steps; the
  mean (std) over all trajectories.
* final-step Spearman across test examples, per run; mean (std) over runs.
* across-run Spearman (LDS-like): per test example, across runs, simulated vs true final
  value; mean over examples. Noisy with few runs.

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
    if r >= 3:
        across = spearman(pred[:, -1], true[:, -1], axis=0)  # [N]
        ar_mean, _, ar_nan = _nanstats(across)
    else:  # a rank correlation over fewer than 3 runs carries no information
        ar_mean, ar_nan = math.nan, true.shape[2]
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
    (mean (std)), across-run ρ, and the seconds it took where recorded. Rows flagged
    ``not_applicable`` are listed below the table with their reason."""
    timed = any("seconds" in m for m in rows.values())
    head = "| method | all-steps MSE | all-steps MAE | final-step ρ | across-run ρ |"
    lines = [head + (" seconds |" if timed else ""), "|---|---|---|---|---|" + ("---|" * timed)]
    skipped = []
    for name, m in rows.items():
        if m.get("not_applicable"):
            skipped.append((name, m.get("reason", NOT_APPLICABLE_REASON)))
            continue
        line = (
            f"| {name} | {_fmt(m['mse_mean'])} ({_fmt(m['mse_std'])}) "
            f"| {_fmt(m['mae_mean'])} ({_fmt(m['mae_std'])}) "
            f"| {_fmt(m['final_spearman_mean'], 3)} ({_fmt(m['final_spearman_std'], 3)}) "
            f"| {_fmt(m['across_run_spearman'], 3)} |"
        )
        if timed:
            line += f" {m['seconds']:.1f} |" if "seconds" in m else " |"
        lines.append(line)
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
