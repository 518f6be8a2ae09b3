"""A tiny collection for tests: demo task, compact vocabulary, 1-layer model, 6 short runs.

python -m gptjax.main --config tests/configs/tiny.py --workdir /tmp/tiny
"""

from gptjax.pipeline.config import base_config


def get_config():
    c = base_config()
    c.stages = "collect"
    c.data.task = "demo"
    c.data.pool_size = 24
    c.data.unseen_size = 4
    c.data.test_size = 8
    c.data.max_len = 48
    c.model.compact_vocab = True
    c.model.hidden_size = 32
    c.model.num_layers = 1
    c.model.num_heads = 2
    c.model.intermediate_size = 64
    c.collect.num_runs = 6
    c.collect.subset_size = 8
    c.collect.batch_size = 2
    c.collect.epochs = 2
    c.collect.learning_rate = 1e-2
    c.collect.runs_per_device = 2
    c.collect.save_params = "evenly:2"
    c.collect.split = "3,1,2"
    c.progress = False
    return c
