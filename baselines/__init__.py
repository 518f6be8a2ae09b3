"""Gradient-based baselines: TracIn-CP and Grad-Dot (see docs/baselines.md)."""

from baselines.grads import GradConfig, GradientEngine
from baselines.predict import GRADIENT_METHODS, predict_gradient_methods
from baselines.tracin import (
    checkpoint_schedule,
    self_influence,
    simulate_from_dots,
    simulate_run,
    simulate_runs,
    tracin_scores,
)

__all__ = [
    "GRADIENT_METHODS",
    "GradConfig",
    "GradientEngine",
    "checkpoint_schedule",
    "predict_gradient_methods",
    "self_influence",
    "simulate_from_dots",
    "simulate_run",
    "simulate_runs",
    "tracin_scores",
]
