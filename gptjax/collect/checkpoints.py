"""Read back the per-run parameter checkpoints that collection saved (for TracIn)."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

import orbax.checkpoint as ocp
from flax import nnx

from gptjax.models.checkpoint import this_process_only
from gptjax.models.transformer import Transformer, first_trained_layer, is_trained
from gptjax.store import RunStore


def params_reader(
    runs_store: RunStore, base_model: Transformer
) -> tuple[Callable[[int, int], Any], Callable[[int], list[int]]]:
    """(params_at(run, step) -> nnx.State, saved_steps(run) -> sorted steps).

    Step 0 is the base model even when it was not saved. Checkpoints that hold only some
    parameters (collect.save_params_regex, or the trained blocks of a partial fine-tuning,
    collect.train_layers) are completed from the base model.
    """
    _, base_state = nnx.split(base_model)

    def saved_steps(run: int) -> list[int]:
        saved_regex(run)  # verified first
        folder = runs_store.checkpoint_dir(run)
        if not folder.is_dir():
            return [0]
        with ocp.CheckpointManager(folder.resolve(), options=_read_options()) as manager:
            return sorted({0, *manager.all_steps()})

    @functools.cache
    def saved_regex(run: int) -> tuple[str, int]:
        """The run's parameter regex and first trained block, after checking its checkpoints
        once (a missing or damaged checkpoint is an error naming it, never silently the base
        model)."""
        meta = runs_store.read(run).meta
        problem = runs_store.checkpoint_problem(run, list(meta.get("saved_steps", [])))
        if problem:
            raise ValueError(f"{problem}; run the collect stage again to recollect run {run}")
        spec = meta["spec"]
        first = first_trained_layer(base_model.config.num_layers, spec.get("train_layers", 0))
        return spec["save_params_regex"], first

    def params_at(run: int, step: int) -> Any:
        regex, first = saved_regex(run)
        folder = runs_store.checkpoint_dir(run)
        if step == 0 and not (folder / "0").exists():
            return base_state
        if not folder.is_dir():
            raise FileNotFoundError(
                f"run {run} has no saved parameters ({folder}); collect with "
                "collect.save_params set (e.g. 'all' or 'evenly:10') and, for a run that is "
                "not a test run, collect.save_params_runs = 'all'"
            )
        trained = base_state.filter(lambda path, _: is_trained(path, first))
        target = filter_params(trained, regex)
        with ocp.CheckpointManager(folder.resolve(), options=_read_options()) as manager:
            if step not in manager.all_steps():
                raise FileNotFoundError(
                    f"run {run}: no checkpoint at step {step} (saved: {manager.all_steps()})"
                )
            saved = manager.restore(step, args=ocp.args.StandardRestore(target))
        return nnx.State.merge(base_state, saved) if regex or first else saved

    return params_at, saved_steps


def _read_options() -> ocp.CheckpointManagerOptions:
    return ocp.CheckpointManagerOptions(
        create=False, read_only=True, multiprocessing_options=this_process_only()
    )


def filter_params(params: Any, regex: str) -> Any:
    """The parameters whose dotted path matches regex ("" = all of them)."""
    if not regex:
        return params
    pattern = re.compile(regex)
    return params.filter(lambda path, _: bool(pattern.search(".".join(map(str, path)))))
