"""Fixed pools from a seed: training pool, unseen pool and test set, with optional label noise.

Three independent random streams are derived from (seed, task name): one picks the rows,
one the instruction template of each example, one the label noise.  So the same seed gives
the same rows whatever the format or the noise level, and the pools only differ in what the
option changes.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from gptjax.tasks.base import FORMATS, Example, Record, Task
from gptjax.tasks.registry import MIXTURE, PAPER_TASKS, get_task, known_tasks

ENCODER_TEXTS = ("input_target", "input", "target", "raw")


@dataclasses.dataclass
class Pools:
    """Training pool (ids 0..P-1), unseen pool (ids P..P+U-1) and test set (ids 0..N-1).

    ``flipped[i]`` is True where label noise changed pool example i (its label, or for a
    generation task its target, which then comes from another pool example).
    ``relatedness[i, n]`` is the ground truth for the demo tasks (1 where pool example i and
    test example n are about the same hidden fact), else None.
    ``meta`` holds the rest: task, format, seed, original labels, template numbers, source ids.
    """

    train: list[Example]
    unseen: list[Example]
    test: list[Example]
    flipped: np.ndarray
    task_of_train: list[str]
    task_of_test: list[str]
    relatedness: np.ndarray | None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def pool(self) -> list[Example]:
        """Training pool then unseen pool: index = pool id."""
        return self.train + self.unseen


@dataclasses.dataclass
class _Item:
    task: Task
    record: Record
    template: int = 0
    original_label: int = -1


def _stream(seed: int, name: str, purpose: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(name.encode()), purpose])


def _take(
    rng: np.random.Generator,
    records: Sequence[Record],
    n: int,
    taken: set,
    what: str,
    task: str,
    split: str,
) -> list[int]:
    chosen: list[int] = []
    if n == 0:
        return chosen
    for i in rng.permutation(len(records)):
        key = records[i].key()
        if key in taken:
            continue
        taken.add(key)
        chosen.append(int(i))
        if len(chosen) == n:
            return chosen
    raise ValueError(
        f"{task}: asked for {n} {what} examples but split {split!r} ({len(records)} rows) has "
        f"only {len(chosen)} left that are distinct and not already taken"
    )


def _select(
    task: Task,
    sizes: tuple[int, int, int],
    seed: int,
    data_root: str | os.PathLike | None,
    source: str,
    pool_split: str | None,
    test_split: str | None,
) -> tuple[list[Record], list[Record], list[Record]]:
    """Rows for (train pool, unseen pool, test set), disjoint by content."""
    n_train, n_unseen, n_test = sizes
    default_pool, default_test = task.default_splits(data_root, source)
    pool_split, test_split = pool_split or default_pool, test_split or default_test
    rng = _stream(seed, task.name, 1)
    load_kw = {"data_root": data_root, "source": source, "seed": seed}
    test_rows = task.load(test_split, **load_kw)
    taken: set = set()
    test_idx = _take(rng, test_rows, n_test, taken, "test", task.name, test_split)
    pool_rows = test_rows if pool_split == test_split else task.load(pool_split, **load_kw)
    pool_idx = _take(rng, pool_rows, n_train + n_unseen, taken, "pool", task.name, pool_split)
    pool = [pool_rows[i] for i in pool_idx]
    return pool[:n_train], pool[n_train:], [test_rows[i] for i in test_idx]


def _add_noise(items: list[_Item], start: int, stop: int, fraction: float, rng, flipped) -> None:
    """Change exactly round(fraction * (stop - start)) of items[start:stop]."""
    count = int(round(fraction * (stop - start)))
    for i in sorted(rng.choice(np.arange(start, stop), size=count, replace=False)):
        item = items[i]
        rec = item.record
        if item.task.kind == "classification":
            n_cls = len(item.task.label_words)
            new = (rec.label + int(rng.integers(1, n_cls))) % n_cls
            item.record = dataclasses.replace(rec, label=new)
        else:  # a generation target is replaced by another pool example's target
            target = item.task.target_text(rec)
            donors = [
                j
                for j, other in enumerate(items)
                if other.task.name == item.task.name
                and other.task.target_text(other.record) != target
            ]
            if not donors:
                raise ValueError(
                    f"{item.task.name}: label noise needs at least two distinct targets"
                )
            donor = items[donors[int(rng.integers(len(donors)))]].record
            fields = dict(rec.fields)
            if "_target" in donor.fields:
                fields["_target"] = donor.fields["_target"]
            item.record = dataclasses.replace(rec, references=donor.references, fields=fields)
        flipped[i] = True


def _render(item: _Item, fmt: str, encoder_text: str) -> Example:
    prompt, target = item.task.render(item.record, fmt, item.template)
    if encoder_text == "input_target":
        enc = prompt + target
    elif encoder_text == "input":
        enc = prompt
    elif encoder_text == "target":
        enc = target.strip()
    else:
        enc = item.task.raw_text(item.record)
    return Example(
        input=prompt,
        target=target,
        task=item.task.name,
        label=item.record.label if item.task.kind == "classification" else None,
        references=item.record.references if item.task.kind == "generation" else (),
        encoder_text=enc,
        source_id=item.record.uid,
    )


def _split_sizes(total: int, parts: int) -> list[int]:
    return [total // parts + (i < total % parts) for i in range(parts)]


def build_pools(
    task: str,
    *,
    pool_size: int,
    unseen_size: int,
    test_size: int,
    seed: int,
    fmt: str | None = None,
    label_noise: float = 0.0,
    data_root: str | os.PathLike | None = None,
    source: str = "local",
    encoder_text: str = "input_target",
    tasks: tuple[str, ...] | None = None,
    **task_kwargs: Any,
) -> Pools:
    """Build the pools of a task (or of the instruction mixture, ``task="mixture"``).

    fmt: ``"finetune"`` (one plain prompt; default for single tasks) or ``"instruction"``
        (a template drawn per example; default for the mixture).
    label_noise: fraction of the training pool, and separately of the unseen pool, whose
        label is flipped (exactly ``round(fraction * size)`` each), recorded in ``flipped``.
    source: ``"local"`` (files under the data root), ``"tfds"`` (prepared tfds data; pass
        ``tfds_data_dir=`` to choose its folder), or for ``task="jsonl"`` the JSONL path.
    encoder_text: what ``Example.encoder_text`` holds: ``"input_target"`` (prompt and target,
        as the reference did), ``"input"``, ``"target"`` or ``"raw"`` (content, no template).
    tasks: the mixture's components (default: the five paper tasks).  Sizes are split evenly.
    task_kwargs: ``pool_split=`` / ``test_split=`` override a task's splits; other keywords
        go to `get_task` (for the mixture: ``<task name>={...}`` per component).
    """
    if task not in known_tasks():
        get_task(task)  # raises the ValueError listing the known tasks
    if encoder_text not in ENCODER_TEXTS:
        raise ValueError(
            f"unknown encoder_text {encoder_text!r}; expected one of {', '.join(ENCODER_TEXTS)}"
        )
    if not 0.0 <= label_noise <= 1.0:
        raise ValueError(f"label_noise must be in [0, 1], got {label_noise}")
    if min(pool_size, unseen_size, test_size) < 0:
        raise ValueError("pool_size, unseen_size and test_size must be >= 0")
    fmt = fmt or ("instruction" if task == "mixture" else "finetune")
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")

    if task == MIXTURE:
        names = tuple(tasks) if tasks else PAPER_TASKS
        if MIXTURE in names:
            raise ValueError("a mixture cannot contain 'mixture'")
        per_task = {n: task_kwargs.pop(n) for n in list(task_kwargs) if n in known_tasks()}
        if task_kwargs:
            raise TypeError(
                f"mixture: unexpected keywords {sorted(task_kwargs)} (pass <task>={{...}})"
            )
        components = [(n, get_task(n, **_task_args(per_task.get(n, {}))[0])) for n in names]
        split_args = [_task_args(per_task.get(n, {}))[1] for n in names]
        sizes = list(
            zip(
                _split_sizes(pool_size, len(names)),
                _split_sizes(unseen_size, len(names)),
                _split_sizes(test_size, len(names)),
                strict=True,
            )
        )
    else:
        if task == "jsonl" and source not in ("local", "tfds") and "path" not in task_kwargs:
            task_kwargs["path"], source = source, "local"
        ctor_args, splits = _task_args(task_kwargs)
        components = [(task, get_task(task, **ctor_args))]
        split_args = [splits]
        sizes = [(pool_size, unseen_size, test_size)]

    train: list[_Item] = []
    unseen: list[_Item] = []
    test: list[_Item] = []
    for (name, t), (n_tr, n_un, n_te), splits in zip(components, sizes, split_args, strict=True):
        rows_tr, rows_un, rows_te = _select(
            t, (n_tr, n_un, n_te), seed, data_root, source, **splits
        )
        n_tmpl = len(t.templates(fmt))
        rng = _stream(seed, name, 2)
        tmpl_pool = rng.integers(n_tmpl, size=n_tr + n_un)
        tmpl_test = rng.integers(n_tmpl, size=n_te)
        train += [_Item(t, r, int(k)) for r, k in zip(rows_tr, tmpl_pool[:n_tr], strict=True)]
        unseen += [_Item(t, r, int(k)) for r, k in zip(rows_un, tmpl_pool[n_tr:], strict=True)]
        test += [_Item(t, r, int(k)) for r, k in zip(rows_te, tmpl_test, strict=True)]

    if len(components) > 1:  # interleave the tasks in one id space
        rng = _stream(seed, "mixture", 1)
        train = [train[i] for i in rng.permutation(len(train))]
        unseen = [unseen[i] for i in rng.permutation(len(unseen))]
        test = [test[i] for i in rng.permutation(len(test))]

    pool = train + unseen
    for item in pool:
        item.original_label = -1 if item.record.label is None else item.record.label
    flipped = np.zeros(len(pool), bool)
    if label_noise > 0:
        rng = _stream(seed, task, 3)
        _add_noise(pool, 0, len(train), label_noise, rng, flipped)
        _add_noise(pool, len(train), len(pool), label_noise, rng, flipped)

    prefix = len(components) > 1
    groups_pool = [_group(it, prefix) for it in pool]
    groups_test = [_group(it, prefix) for it in test]
    relatedness = None
    if pool and test and all(g is not None for g in groups_pool + groups_test):
        gp, gt = np.array(groups_pool, object), np.array(groups_test, object)
        relatedness = (gp[:, None] == gt[None, :]).astype(np.float32)

    examples = [_render(it, fmt, encoder_text) for it in pool]
    meta: dict[str, Any] = {
        "task": task,
        "tasks": [n for n, _ in components],
        "fmt": fmt,
        "seed": seed,
        "source": source,
        "label_noise": label_noise,
        "original_labels": np.array([it.original_label for it in pool], np.int32),
        "template_train": np.array([it.template for it in pool], np.int32),
        "template_test": np.array([it.template for it in test], np.int32),
        "groups_train": groups_pool,
        "groups_test": groups_test,
    }
    for name, t in components:
        if hasattr(t, "world"):
            meta.setdefault("worlds", {})[name] = t.world(seed)
    return Pools(
        train=examples[: len(train)],
        unseen=examples[len(train) :],
        test=[_render(it, fmt, encoder_text) for it in test],
        flipped=flipped,
        task_of_train=[it.task.name for it in pool],
        task_of_test=[it.task.name for it in test],
        relatedness=relatedness,
        meta=meta,
    )


def _task_args(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str | None]]:
    kwargs = dict(kwargs)
    splits = {
        "pool_split": kwargs.pop("pool_split", None),
        "test_split": kwargs.pop("test_split", None),
    }
    return kwargs, splits


def _group(item: _Item, prefix: bool) -> str | None:
    g = item.record.group
    if g is None:
        return None
    return f"{item.task.name}:{g}" if prefix else g
