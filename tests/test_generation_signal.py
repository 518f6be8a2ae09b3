"""experiments.generation_signal: its statistics on runs whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.generation_signal import signal_stats


def _runs(bleu_of, k=12, t=5, n=9, seed=0):
    rng = np.random.default_rng(seed)
    loss = rng.standard_normal((k, t, n)) + np.arange(n)
    bleu = bleu_of(loss, rng)
    bleu[:, 1::2] = np.nan  # recorded every other step, like generation_every
    return {"loss": loss, "bleu": bleu}


def test_a_metric_that_is_a_function_of_the_loss_is_ranked_like_it():
    stats = signal_stats(_runs(lambda loss, rng: 50 - 3 * loss))["bleu"]
    assert stats["step"] == 4
    assert stats["rho_with_loss"] == pytest.approx(-1.0)
    assert stats["corpus_rho_with_loss"] == pytest.approx(-1.0)
    assert stats["across_run_std"] == pytest.approx(3 * stats["loss_across_run_std"])


def test_a_shift_per_run_is_the_run_share_and_persists():
    def shifted(loss, rng):
        run = rng.standard_normal((loss.shape[0], 1, 1)) * 5
        return 20 + run + 0.01 * rng.standard_normal(loss.shape)

    stats = signal_stats(_runs(shifted))["bleu"]
    assert stats["run_share"] > 0.99
    assert stats["persistence"] > 0.99
    assert abs(stats["rho_with_loss"]) < 0.5  # unrelated to the loss


def test_runs_without_generation_metrics_are_an_error():
    with pytest.raises(ValueError, match="no generation metric"):
        signal_stats({"loss": np.zeros((3, 2, 2))})
