"""Simulator quality on the demo task: configs/demo.py with 44 runs split 24 / 4 / 16, so
the held-out runs can tell methods apart (all-steps MSE, LDS over 16 test runs).

    python -m benchmarks.simulator_quality --tasks demo [--quick]
    python -m gptjax.main --config configs/quality_demo.py --workdir workdirs/quality/demo
"""

from gptjax.pipeline.config import base_config


def get_config():
    c = base_config()
    c.seed = 0
    c.progress = False
    c.data.task = "demo"
    c.data.pool_size = 64
    c.data.test_size = 48
    c.data.max_len = 64
    c.model.source = "init"
    c.model.compact_vocab = True
    c.model.pretrain_steps = 300
    c.model.pretrain_task_kwargs.world_seed = 1000
    c.model.hidden_size = 64
    c.model.num_layers = 2
    c.model.num_heads = 4
    c.model.intermediate_size = 256
    c.collect.num_runs = 44
    c.collect.subset_size = 32
    c.collect.batch_size = 4
    c.collect.epochs = 3
    c.collect.learning_rate = 1e-3
    c.collect.runs_per_device = 11
    c.collect.save_params = "all"
    c.collect.split = "24,4,16"
    c.simulator.models = "gptfluence,simfluence"
    c.baselines.methods = "persistence,mean_trajectory,tracin_cp_all"
    return c
