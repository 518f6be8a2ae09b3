"""Gradient-based baselines: TracIn-CP and Grad-Dot (see docs/baselines.md)."""

from baselines.grads import GradConfig, GradientEngine
from baselines.tracin import (
    checkpoint_schedule,
    self_influence,
    simulate_run,
    simulate_runs,
    tracin_scores,
)

__all__ = [
    "GradConfig",
    "GradientEngine",
    "checkpoint_schedule",
    "self_influence",
    "simulate_run",
    "simulate_runs",
    "tracin_scores",
]
