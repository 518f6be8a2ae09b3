"""Tasks and data: raw data -> fixed pools of examples -> tokenised, fixed-shape batches.

    pools = build_pools("sst2", pool_size=200, unseen_size=100, test_size=200, seed=0)
    batch = tokenize_examples(pools.train, tokenizer, max_len=256)

See docs/tasks.md for the tasks, formats and data sources.
"""

from gptjax.tasks.base import FORMATS, Example, Record, Task
from gptjax.tasks.demo import DemoWorld, make_world
from gptjax.tasks.pools import ENCODER_TEXTS, Pools, build_pools
from gptjax.tasks.registry import MIXTURE, PAPER_TASKS, get_task, known_tasks
from gptjax.tasks.text_metrics import bleu, rouge_l
from gptjax.tasks.tokenize import TokenizedExamples, target_bucket, tokenize_examples

__all__ = [
    "ENCODER_TEXTS",
    "MIXTURE",
    "FORMATS",
    "PAPER_TASKS",
    "DemoWorld",
    "Example",
    "Pools",
    "Record",
    "Task",
    "TokenizedExamples",
    "bleu",
    "build_pools",
    "get_task",
    "known_tasks",
    "make_world",
    "rouge_l",
    "target_bucket",
    "tokenize_examples",
]
