"""Task names -> task objects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gptjax.tasks.base import Task
from gptjax.tasks.demo import DemoGenTask, DemoTask
from gptjax.tasks.paper import BoolqTask, JsonlTask, RteTask, Sst2Task, WebnlgTask, WmtDeEnTask

#: the five tasks of the paper, in the order of its tables
PAPER_TASKS = ("sst2", "rte", "boolq", "webnlg", "wmt16_de_en")


class MixtureTask(Task):
    """The instruction-tuning mixture: several tasks in one id space.

    ``kind`` is ``"mixed"``: look at each example's ``kind`` / ``task`` instead.
    """

    name = "mixture"
    kind = "mixed"
    description = "instruction mixture of several tasks (default: the five paper tasks)"

    def __init__(self, tasks: tuple[str, ...] | None = None, **task_kwargs: Any) -> None:
        self.tasks = tuple(tasks) if tasks else PAPER_TASKS
        for t in self.tasks:
            if t == "mixture":
                raise ValueError("a mixture cannot contain 'mixture'")
        self.components = [get_task(t) for t in self.tasks]  # validates the names
        self.task_kwargs = task_kwargs


_FACTORIES: dict[str, Callable[..., Task]] = {
    "sst2": Sst2Task,
    "rte": RteTask,
    "boolq": BoolqTask,
    "webnlg": WebnlgTask,
    "wmt16_de_en": WmtDeEnTask,
    "demo": DemoTask,
    "demo_gen": DemoGenTask,
    "jsonl": JsonlTask,
    "mixture": MixtureTask,
}


def known_tasks() -> list[str]:
    """Every task name `get_task` accepts."""
    return list(_FACTORIES)


def get_task(name: str, **kwargs: Any) -> Task:
    """The task called ``name``; keyword arguments configure it (e.g. ``n_words`` for demo,
    ``path`` for jsonl, ``tfds_data_dir`` for the paper tasks)."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(known_tasks())}")
    try:
        return _FACTORIES[name](**kwargs)
    except TypeError as err:
        raise TypeError(f"task {name!r}: {err}") from None
