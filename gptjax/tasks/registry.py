"""Task names -> task objects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gptjax.tasks.base import Task
from gptjax.tasks.demo import DemoGenTask, DemoTask
from gptjax.tasks.jsonl import JsonlTask
from gptjax.tasks.paper import BoolqTask, RteTask, Sst2Task, WebnlgTask, WmtDeEnTask

#: the five tasks of the paper, in the order of its tables
PAPER_TASKS = ("sst2", "rte", "boolq", "webnlg", "wmt16_de_en")


# The instruction-tuning mixture: several tasks in one id space. It is not a task object of
# its own: ``build_pools("mixture", tasks=...)`` draws from its components.
MIXTURE = "mixture"


_FACTORIES: dict[str, Callable[..., Task]] = {
    "sst2": Sst2Task,
    "rte": RteTask,
    "boolq": BoolqTask,
    "webnlg": WebnlgTask,
    "wmt16_de_en": WmtDeEnTask,
    "demo": DemoTask,
    "demo_gen": DemoGenTask,
    "jsonl": JsonlTask,
}


def known_tasks() -> list[str]:
    """Every task name `get_task` accepts."""
    return [*_FACTORIES, MIXTURE]


def get_task(name: str, **kwargs: Any) -> Task:
    """The task called ``name``; keyword arguments configure it (e.g. ``n_words`` for demo,
    ``path`` for jsonl, ``tfds_data_dir`` for the paper tasks)."""
    if name == MIXTURE:
        raise ValueError(
            "'mixture' is several tasks in one id space, not one task: build its pools with "
            "build_pools('mixture', tasks=(...))"
        )
    if name not in _FACTORIES:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(known_tasks())}")
    try:
        return _FACTORIES[name](**kwargs)
    except TypeError as err:
        raise TypeError(f"task {name!r}: {err}") from None
