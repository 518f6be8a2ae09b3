"""The built-in demo: invented creatures with hidden properties, a tiny GPT-NeoX, CPU-sized.

    python -m gptjax.main --config configs/demo.py --workdir workdirs/demo

Pretrains a tiny base model on another world's facts, collects 32 fine-tuning runs of 24
steps (about a minute on 2 CPU cores), fits GPTfluence and
Simfluence, runs TracIn-CP / Grad-Dot, and prints a table of all-steps MSE / MAE and
Spearman scores on held-out runs beside the persistence and mean-trajectory baselines.
"""

from gptjax.pipeline.config import base_config


def get_config():
    c = base_config()
    c.seed = 0
    c.data.task = "demo"
    c.data.pool_size = 64
    c.data.unseen_size = 16
    c.data.test_size = 48
    c.data.max_len = 64

    c.model.source = "init"
    c.model.compact_vocab = True  # the demo's texts use ~100 distinct Pythia tokens
    # The base model first learns the format on another world of invented words, so the
    # runs' dynamics are about this world's facts, not about learning to answer yes/no.
    c.model.pretrain_steps = 300
    c.model.pretrain_task_kwargs.world_seed = 1000
    c.model.hidden_size = 64
    c.model.num_layers = 2
    c.model.num_heads = 4
    c.model.intermediate_size = 256

    c.collect.num_runs = 32
    c.collect.subset_size = 32
    c.collect.batch_size = 4
    c.collect.epochs = 3
    c.collect.learning_rate = 1e-3
    c.collect.runs_per_device = 8
    c.collect.save_params = "all"
    c.collect.split = "24,2,6"
    return c
