"""Collect training dynamics: K short fine-tuning runs, each evaluated on every test example
after every step, vmapped over the runs that share a device and sharded over devices.

Runs are processed in fixed *groups* of G = runs_per_device x local devices (the last group
is padded with copies that are thrown away). A group's composition depends only on the
config, so recomputing an interrupted group gives bit-identical numbers; each finished run is
written atomically, and a second invocation skips every run already on disk. With several
processes (jax.distributed), process p owns groups p, p + P, ...: it computes and writes only
those, on its local devices.
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from gptjax.collect.checkpoints import filter_params
from gptjax.collect.curricula import draw_curriculum, steps_per_run
from gptjax.collect.length_buckets import (
    MAX_BUCKETS,
    bucket_by_length,
    bucketed_losses,
    trim_to_longest,
)
from gptjax.collect.train_step import (
    COMPUTE_DTYPES,
    RESIDUAL,
    Objective,
    cast_floats,
    eval_losses,
    make_optimizer,
    make_run_block,
    make_schedule,
)
from gptjax.models.checkpoint import this_process_only
from gptjax.models.transformer import Transformer, first_trained_layer, is_trained
from gptjax.store import RunRecord, RunStore
from gptjax.tasks.tokenize import TOKEN_FIELDS


@dataclasses.dataclass(frozen=True)
class GroupModels:
    """The models of a collection group after some step: row i (run ``runs[i]``) is
    ``nnx.merge(graphdef, stacked[i], frozen)``; ``frozen`` is None with full fine-tuning."""

    graphdef: nnx.GraphDef
    stacked: Any
    frozen: Any

    def model(self, i: int) -> Transformer:
        host = jax.device_get(jax.tree.map(lambda a: a[i], self.stacked))
        return nnx.merge(self.graphdef, host, *([] if self.frozen is None else [self.frozen]))


# extra_eval(models, step, runs) -> {metric name: float32 [G, N]}
ExtraEval = Callable[[GroupModels, int, list[int]], dict[str, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class CollectSpec:
    """A collection's settings. The defaults are the paper's fine-tuning protocol (AdamW,
    linear decay, no warm-up) and are the pipeline config's defaults too."""

    seed: int = 0
    num_runs: int = 32
    subset_size: int = 128
    batch_size: int = 4
    epochs: int = 3
    learning_rate: float = 1e-5
    warmup_steps: int = 0
    end_lr_factor: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.001
    eval_chunk: int = 64
    runs_per_device: int = 4
    save_steps: tuple[int, ...] = ()  # steps whose parameters are checkpointed (TracIn)
    save_params_regex: str = ""  # only parameters whose path matches ("" = all)
    # Runs before this one save nothing: the gradient baselines read only the test runs'
    # checkpoints, and a large model's saves for every run may not fit on the disk.
    save_from_run: int = 0
    unseen_runs: int = 0  # the last `unseen_runs` runs also draw from the unseen pool
    # Partial fine-tuning: train only the top k blocks and the final norm (0 = every
    # parameter, the default and the paper's protocol). The frozen blocks' output for every
    # pool and test example is computed once and cached, so a step costs the top k blocks.
    train_layers: int = 0
    eval_every: int = 1  # test losses after steps m, 2m, ..., T (and 0); NaN at the others
    compute_dtype: str = "float32"  # or bfloat16: activations and matmuls; fp32 master weights
    # Record <grad of the batch loss, grad of each test loss> before every step (TracIn-CP at
    # every step, exact, with no checkpoint stored): one forward-mode pass per step.
    tracin_dots: bool = False
    # Evaluate the test set in this many length buckets, each trimmed to its longest example
    # (exact: right padding, causal attention; training batches are cut to the pool's
    # longest). 0: every sequence at its padded length, as given.
    eval_buckets: int = MAX_BUCKETS

    def __post_init__(self):
        checks = [
            (self.eval_buckets >= 0, "collect.eval_buckets must be >= 0"),
            (self.save_from_run >= 0, "collect.save_from_run must be >= 0"),
            (self.train_layers >= 0, "collect.train_layers must be >= 0"),
            (self.eval_every >= 1, "collect.eval_every must be >= 1"),
            (
                self.compute_dtype in COMPUTE_DTYPES,
                f"collect.compute_dtype must be one of {sorted(COMPUTE_DTYPES)}",
            ),
        ]
        problems = [why for ok, why in checks if not ok]
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def num_steps(self) -> int:
        return steps_per_run(self.subset_size, self.batch_size, self.epochs)

    def optimizer(self) -> tuple[Callable[[int], Any], Any]:
        """(learning-rate schedule, AdamW) of every run."""
        schedule = make_schedule(
            self.learning_rate, self.num_steps, self.warmup_steps, self.end_lr_factor
        )
        adamw = make_optimizer(
            schedule, b1=self.b1, b2=self.b2, eps=self.eps, weight_decay=self.weight_decay
        )
        return schedule, adamw


def parse_save_steps(rule: str, num_steps: int) -> tuple[int, ...]:
    """'none' | 'all' | 'every:m' | 'evenly:k' (k checkpoints, the last at T) | '3,10,20'."""
    rule = str(rule).strip()
    usage = f"collect.save_params: {rule!r} is not none | all | every:m | evenly:k | a,b,c"
    if rule in ("", "none"):
        return ()
    if rule == "all":
        return tuple(range(num_steps + 1))
    if rule.startswith(("every:", "evenly:")):
        kind, _, count = rule.partition(":")
        if not count.strip().isdigit() or int(count) < 1:
            raise ValueError(f"{usage} (m and k are integers >= 1)")
        n = int(count)
        if kind == "every":
            return tuple(sorted(set(range(0, num_steps + 1, n)) | {num_steps}))
        return tuple(sorted({int(round(x)) for x in np.linspace(0, num_steps, n + 1)[:-1]}))
    try:
        steps = tuple(sorted({int(s) for s in rule.split(",")}))
    except ValueError:
        raise ValueError(usage) from None
    bad = [s for s in steps if not 0 <= s <= num_steps]
    if bad:
        raise ValueError(f"collect.save_params: steps {bad} are outside 0..{num_steps}")
    return steps


def run_candidates(spec: CollectSpec, run: int, pool_size: int, unseen_size: int) -> np.ndarray:
    if run >= spec.num_runs - spec.unseen_runs and unseen_size:
        return np.arange(pool_size + unseen_size)
    return np.arange(pool_size)


def owned_groups(num_runs: int, group_size: int, process: int, num_processes: int) -> list:
    groups = [list(range(s, min(s + group_size, num_runs))) for s in range(0, num_runs, group_size)]
    return [g for i, g in enumerate(groups) if i % num_processes == process]


def saves_params(spec: CollectSpec, run: int) -> bool:
    """Whether ``run`` checkpoints its parameters (at ``spec.save_steps``)."""
    return bool(spec.save_steps) and run >= spec.save_from_run


def checkpoint_bytes(params: Any, spec: CollectSpec) -> int:
    """Bytes of one run's checkpoint at one step: the parameters ``spec`` saves."""
    return sum(a.nbytes for a in jax.tree.leaves(filter_params(params, spec.save_params_regex)))


def check_checkpoint_space(folder: Path, runs: list[int], spec: CollectSpec, nbytes: int) -> None:
    """Refuse, before any step, a collection whose checkpoints of ``runs`` (``nbytes`` per
    run and step) would not fit in the free space of ``folder``'s disk: a full disk would end
    it after hours, with the runs collected so far the only ones kept."""
    saving = [run for run in runs if saves_params(spec, run)]
    need = len(saving) * len(spec.save_steps) * nbytes
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if need > free:
        raise ValueError(
            f"collect.save_params: the parameter checkpoints would take {need / 1e9:.1f} GB "
            f"({len(saving)} runs x {len(spec.save_steps)} steps x {nbytes / 1e6:.0f} MB) and "
            f"{existing} has {free / 1e9:.1f} GB free; save fewer steps (collect.save_params), "
            "fewer parameters (collect.save_params_regex) or only the test runs' "
            "(collect.save_params_runs = 'test')"
        )


class _CheckpointWriter:
    """Orbax CheckpointManager per run that saves; step numbers are training steps (0 = base)."""

    def __init__(self, runs_store: RunStore, runs: list[int], spec: CollectSpec):
        self.spec = spec
        self.store = runs_store
        self.managers = {}
        for run in runs:
            folder = runs_store.checkpoint_dir(run)
            runs_store.checkpoint_digest_file(run).unlink(missing_ok=True)
            shutil.rmtree(folder, ignore_errors=True)  # left by an interrupted attempt
            if not saves_params(spec, run):
                continue
            folder.mkdir(parents=True)  # Orbax cannot create it with active_processes set
            self.managers[run] = ocp.CheckpointManager(
                folder.resolve(),
                # Synchronous: Orbax's asynchronous save waits on signals from background
                # threads with a deadline, and on a shared machine (the collection paused for
                # minutes) one timed out and ended a long collection. A run's checkpoint is
                # small beside the steps between saves.
                options=ocp.CheckpointManagerOptions(
                    create=False,
                    multiprocessing_options=this_process_only(),
                    enable_async_checkpointing=False,
                ),
            )

    def save(self, stacked_params: Any, step: int, runs: list[int]) -> None:
        """Save the runs this writer manages; ``runs[i]`` is row i of ``stacked_params``.
        Runs it does not manage (already on disk and recomputed with their group, or saving
        nothing) are left untouched."""
        if not self.managers.keys() & set(runs):
            return  # nothing to copy to the host
        host = jax.device_get(filter_params(stacked_params, self.spec.save_params_regex))
        for i, run in enumerate(runs):
            if run in self.managers:
                one = jax.tree.map(lambda a, i=i: a[i], host)
                self.managers[run].save(step, args=ocp.args.StandardSave(one))

    def close(self) -> None:
        """Finish writing, then record each run's checkpoint digests."""
        for run, manager in self.managers.items():
            manager.wait_until_finished()
            manager.close()
            self.store.record_checkpoints(run, list(self.spec.save_steps))


def split_trained(model: Transformer, train_layers: int) -> tuple[nnx.GraphDef, Any, Any, int]:
    """(graphdef, trained params, frozen params or None, first trained block) of ``model``
    fine-tuned in its top ``train_layers`` blocks and final norm (0: every parameter)."""
    first = first_trained_layer(model.config.num_layers, train_layers)
    if not first:
        graphdef, params = nnx.split(model)
        return graphdef, params, None, 0
    graphdef, params, frozen = nnx.split(model, lambda path, _: is_trained(path, first), ...)
    return graphdef, params, frozen, first


@functools.partial(jax.jit, static_argnums=(0, 1))
def _frozen_prefix(graphdef: Any, first_layer: int, state: Any, ids: Any, mask: Any) -> jax.Array:
    # Module level, keyed by the model's structure: every call for one model (the pool and
    # the test set, each gradient engine's batches) shares its compilation.
    return nnx.merge(graphdef, state).residual_after(ids, mask, first_layer)


def cached_residuals(
    model: Transformer, tokens: dict[str, jax.Array], first_layer: int, chunk: int
) -> dict[str, jax.Array]:
    """``tokens`` with input_ids replaced by the frozen prefix's output (`RESIDUAL`), computed
    once, ``chunk`` examples at a time."""
    graphdef, state = nnx.split(model)
    ids, mask = np.asarray(tokens["input_ids"]), np.asarray(tokens["attention_mask"])
    count, chunk = len(ids), max(1, chunk)
    # The last chunk is padded (its last example repeated) to the chunk's shape, so every
    # chunk of a length shares one compilation; the padding rows are dropped below.
    ids, mask = (np.pad(a, ((0, -count % chunk), (0, 0)), mode="edge") for a in (ids, mask))
    parts = [
        _frozen_prefix(graphdef, first_layer, state, ids[i : i + chunk], mask[i : i + chunk])
        for i in range(0, len(ids), chunk)
    ]
    out = {k: v for k, v in tokens.items() if k != "input_ids"}
    out[RESIDUAL] = jnp.concatenate(parts)[:count]
    return out


def step_blocks(spec: CollectSpec, extra_every: int) -> list[tuple[int, int, bool]]:
    """(first step, last step, evaluate) of each block of steps run in one jitted call: a
    block ends where the test losses are evaluated (every ``eval_every`` steps and at T),
    where parameters are saved, and where the extra evaluation runs."""
    num_steps = spec.num_steps
    ends = {t for t in range(1, num_steps + 1) if t % spec.eval_every == 0} | {num_steps}
    ends |= {t for t in spec.save_steps if t > 0}
    if extra_every:
        ends |= {t for t in range(1, num_steps + 1) if t % extra_every == 0}
    blocks, first = [], 1
    for end in sorted(ends):
        blocks.append((first, end, end % spec.eval_every == 0 or end == num_steps))
        first = end + 1
    return blocks


def test_set_losses(
    objective: Objective, spec: CollectSpec, params: Any, frozen: Any, test: Any
) -> jax.Array:
    """[N] target losses of the test set, ``spec.eval_chunk`` examples at a time (in length
    buckets, as `bucket_by_length` made them, when ``spec.eval_buckets``)."""
    losses_of = lambda t: objective(params, frozen, t)  # noqa: E731
    if spec.eval_buckets:
        return bucketed_losses(losses_of, test, spec.eval_chunk)
    return eval_losses(losses_of, test, spec.eval_chunk)


def group_block(
    spec: CollectSpec,
    objective: Objective,
    optimizer: Any,
    mesh: Mesh,
    evaluate: bool,
) -> Callable:
    """The jitted block of steps of one group: `make_run_block` vmapped over the runs on
    each device and sharded over the mesh's "runs" axis; params and optimiser state donated.
    Called as ``(params, opt_state, alive, batch_ids, pool, test, frozen)`` with the run
    arguments stacked [G, ...] (`benchmarks.collect_memory` lowers it to read XLA's memory
    estimate)."""
    fn = make_run_block(
        objective,
        optimizer,
        functools.partial(test_set_losses, objective, spec),
        evaluate=evaluate,
        tracin_dots=spec.tracin_dots,
    )
    return jax.jit(
        jax.shard_map(
            jax.vmap(fn, in_axes=(0, 0, 0, 0, None, None, None)),
            mesh=mesh,
            in_specs=(P("runs"),) * 4 + (P(),) * 3,
            out_specs=P("runs"),
        ),
        donate_argnums=(0, 1),
    )


def collect(
    runs_store: RunStore,
    spec: CollectSpec,
    base_model: Transformer,
    pool_tokens: dict[str, np.ndarray],
    test_tokens: dict[str, np.ndarray],
    *,
    pool_size: int,
    unseen_size: int = 0,
    extra_eval: ExtraEval | None = None,
    extra_eval_every: int = 1,
    meta: dict[str, Any] | None = None,
    progress: bool = True,
    also_accept: tuple[str, ...] = (),
) -> list[int]:
    """Collect every run this process owns that is not in ``runs_store`` yet. Returns the runs
    written. ``also_accept``: further ``config_fingerprint`` values a run on disk may carry
    and still count as collected (fingerprints older versions wrote for the same config)."""
    num_steps = spec.num_steps
    schedule, optimizer = spec.optimizer()
    # optax evaluates the schedule at the update count before incrementing it: step t uses t-1.
    lrs = np.array([float(schedule(t)) for t in range(num_steps)], np.float32)
    graphdef, base_params, frozen, first_layer = split_trained(base_model, spec.train_layers)
    objective = Objective(graphdef, first_layer, spec.compute_dtype)
    # Trailing padding is cut (exact: right padding, causal attention): the pool to its
    # longest example, the test set to length buckets evaluated one by one.
    pool = trim_to_longest(pool_tokens) if spec.eval_buckets else pool_tokens
    pool = {k: jnp.asarray(pool[k]) for k in TOKEN_FIELDS}
    test = {k: jnp.asarray(test_tokens[k]) for k in TOKEN_FIELDS}
    num_test = test["input_ids"].shape[0]

    devices = jax.local_devices()
    mesh = Mesh(np.array(devices), ("runs",))
    group_size = spec.runs_per_device * len(devices)
    groups = owned_groups(spec.num_runs, group_size, jax.process_index(), jax.process_count())
    # A run file that does not read back whole, or holds another run or another config's
    # run, or whose checkpoints differ from their digests, is collected again (the group is
    # recomputed; its good runs' files and checkpoints are not rewritten). Only this
    # process's runs are checked.
    fingerprint = (meta or {}).get("config_fingerprint")
    done, damaged = runs_store.verified(
        {"config_fingerprint": (fingerprint, *also_accept)} if fingerprint else None,
        runs=[run for g in groups for run in g],
    )
    for run, why in damaged.items():
        tqdm.write(f"run {run}: {why}; collecting it again")
    todo = [g for g in groups if not set(g) <= done]
    if not todo:
        return []
    per_checkpoint = checkpoint_bytes(base_params, spec)
    missing_runs = [run for g in todo for run in g if run not in done]
    check_checkpoint_space(runs_store.root, missing_runs, spec, per_checkpoint)

    if first_layer:
        pool = cached_residuals(base_model, pool, first_layer, spec.eval_chunk)
        test = cached_residuals(base_model, test, first_layer, spec.eval_chunk)
    if spec.compute_dtype != "float32":
        # Cast what every step reads but never changes once, not inside each step's loss
        # (the Objective's cast of an array already in the dtype is free).
        dtype = COMPUTE_DTYPES[spec.compute_dtype]
        frozen = cast_floats(frozen, dtype)
        pool, test = (
            {k: v.astype(dtype) if k == RESIDUAL else v for k, v in t.items()} for t in (pool, test)
        )
    if spec.eval_buckets:
        test = bucket_by_length(test, spec.eval_buckets)
    replicated = NamedSharding(mesh, P())
    pool, test, frozen = jax.device_put((pool, test, frozen), replicated)

    test_losses = functools.partial(test_set_losses, objective, spec)
    extra_every = max(extra_eval_every, 1) if extra_eval is not None else 0
    blocks = step_blocks(spec, extra_every)
    compiled: dict[tuple[int, bool], Callable] = {}

    def block_fn(length: int, evaluate: bool) -> Callable:
        if (length, evaluate) not in compiled:
            compiled[length, evaluate] = group_block(spec, objective, optimizer, mesh, evaluate)
        return compiled[length, evaluate]

    initial = np.asarray(jax.jit(test_losses)(base_params, frozen, test))
    runs_sharding = NamedSharding(mesh, P("runs"))
    tokens_per_step = (
        float(np.asarray(pool_tokens["attention_mask"]).sum(1).mean()) * spec.batch_size
    )
    written = []
    bar = tqdm(
        total=len(todo) * num_steps,
        disable=not progress,
        unit="step",
        desc="collect",
        dynamic_ncols=True,
    )
    for group in todo:
        t_start = time.perf_counter()
        runs = group + [group[0]] * (group_size - len(group))  # pad: recomputed, discarded
        subsets, curricula = zip(
            *[
                draw_curriculum(
                    spec.seed,
                    run,
                    candidates=run_candidates(spec, run, pool_size, unseen_size),
                    subset_size=spec.subset_size,
                    batch_size=spec.batch_size,
                    epochs=spec.epochs,
                )
                for run in runs
            ],
            strict=True,
        )
        curricula = np.stack(curricula)  # [G, T, B]
        stack = lambda tree: jax.device_put(
            jax.tree.map(lambda a: jnp.broadcast_to(a, (group_size, *a.shape)), tree),
            runs_sharding,
        )
        params = stack(base_params)
        opt_state = stack(optimizer.init(base_params))
        alive = jax.device_put(jnp.ones(group_size, bool), runs_sharding)
        missing = [run for run in group if run not in done]
        writer = _CheckpointWriter(runs_store, missing, spec) if spec.save_steps else None
        if writer and 0 in spec.save_steps:
            writer.save(params, 0, group)

        y = np.full((group_size, num_steps + 1, num_test), np.nan, np.float32)
        y[:, 0] = initial
        dots = (
            np.full((group_size, num_steps, num_test), np.nan, np.float32)
            if spec.tracin_dots
            else None
        )
        extra: dict[str, np.ndarray] = {}
        if extra_eval is not None:
            initial_models = GroupModels(graphdef, params, frozen)
            for name, values in extra_eval(initial_models, 0, runs).items():
                extra[name] = np.full((group_size, num_steps + 1, num_test), np.nan, np.float32)
                extra[name][:, 0] = values
        train_loss = np.zeros((group_size, num_steps), np.float32)
        alive_host = np.ones(group_size, bool)
        failed_step = np.full(group_size, -1)
        for first, last, evaluate in blocks:
            ids = jax.device_put(jnp.asarray(curricula[:, first - 1 : last]), runs_sharding)
            params, opt_state, alive, loss, alive_steps, block_dots, losses = block_fn(
                last - first + 1, evaluate
            )(params, opt_state, alive, ids, pool, test, frozen)
            alive_steps = np.asarray(alive_steps)  # [G, S]: one copy to the host per block
            for s in range(alive_steps.shape[1]):
                now = alive_steps[:, s]
                failed_step[alive_host & ~now] = first + s
                alive_host = alive_host & now
            train_loss[:, first - 1 : last] = np.asarray(loss)
            if evaluate:
                y[:, last] = np.asarray(losses)
            if dots is not None:
                dots[:, first - 1 : last] = np.asarray(block_dots)
            if extra_eval is not None and (last % extra_every == 0 or last == num_steps):
                for name, values in extra_eval(
                    GroupModels(graphdef, params, frozen), last, runs
                ).items():
                    extra[name][:, last] = np.where(alive_host[:, None], values, np.nan)
            if writer and last in spec.save_steps:
                writer.save(params, last, group)
            elapsed = time.perf_counter() - t_start
            bar.update(last - first + 1)
            bar.set_postfix(
                runs=f"{group[0]}-{group[-1]}/{spec.num_runs}",
                tok_s=f"{tokens_per_step * group_size * last / elapsed:,.0f}",
            )
        if writer:
            writer.close()
            if group is todo[0]:
                saving = sum(saves_params(spec, run) for run in range(spec.num_runs))
                tqdm.write(
                    f"parameter checkpoints: {per_checkpoint / 2**20:.1f} MiB each, "
                    f"{len(spec.save_steps)} per run, "
                    f"{per_checkpoint * len(spec.save_steps) * saving / 2**30:.2f} GiB for "
                    f"the {saving} runs that save"
                )
        wall = time.perf_counter() - t_start
        for i, run in enumerate(group):
            if run in done:
                continue
            status = "ok" if alive_host[i] else "diverged"
            if status != "ok":
                tqdm.write(
                    f"run {run}: loss became NaN/inf at step {failed_step[i]}; "
                    "stopped and marked invalid in the store (the other runs continue)"
                )
            run_meta = dict(meta or {})
            run_meta.update(
                run=run,
                seed=spec.seed,
                status=status,
                failed_step=int(failed_step[i]),
                spec=dataclasses.asdict(spec),
                saved_steps=list(spec.save_steps) if saves_params(spec, run) else [],
                bytes_per_checkpoint=per_checkpoint if saves_params(spec, run) else 0,
            )
            metrics = {"loss": y[i]} | {name: v[i] for name, v in extra.items()}
            record = RunRecord(
                curricula[i],
                subsets[i],
                lrs,
                train_loss[i],
                metrics,
                run_meta,
                tracin_dots=None if dots is None else dots[i],
            )
            runs_store.write(run, record)
            runs_store.write_timing(run, {"wall_s": wall, "group": group, "devices": len(devices)})
            written.append(run)
    bar.close()
    return written
