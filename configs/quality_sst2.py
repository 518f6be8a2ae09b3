"""Simulator quality on SST2: a small Pythia-architecture model (d_model 64, 2 layers,
compact vocabulary) pretrained 300 steps on other SST2 rows, 44 runs of 24 steps (subsets
of 32 from a pool of 100, batch 4, 3 epochs, AdamW lr 1e-3, linear decay) split 24 / 4 / 16,
48 test examples.

    python -m benchmarks.simulator_quality --tasks sst2 [--quick]
    python -m gptjax.main --config configs/quality_sst2.py --workdir workdirs/quality/sst2
"""

from gptjax.pipeline.config import base_config


def get_config():
    c = base_config()
    c.seed = 0
    c.progress = False
    c.data.task = "sst2"
    c.data.format = "finetune"
    c.data.pool_size = 100
    c.data.test_size = 48
    c.data.max_len = 64
    c.model.source = "init"
    c.model.arch = "gpt_neox"
    c.model.compact_vocab = True
    c.model.hidden_size = 64
    c.model.num_layers = 2
    c.model.num_heads = 4
    c.model.intermediate_size = 256
    c.model.pretrain_steps = 300
    c.model.pretrain_examples = 512
    c.model.pretrain_batch_size = 16
    c.model.pretrain_lr = 3e-3
    c.collect.num_runs = 44
    c.collect.subset_size = 32
    c.collect.batch_size = 4
    c.collect.epochs = 3
    c.collect.learning_rate = 1e-3
    c.collect.warmup_steps = 0
    c.collect.end_lr_factor = 0.0
    c.collect.runs_per_device = 11
    c.collect.save_params = "all"
    c.collect.split = "24,4,16"
    c.simulator.models = "gptfluence,simfluence"
    c.baselines.methods = "persistence,mean_trajectory,tracin_cp_all"
    return c
