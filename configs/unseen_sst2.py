r"""Unseen training data (the paper's Table 11, first column), on SST-2.

    python -m gptjax.pipeline.seeds --config configs/unseen_sst2.py --seeds 0,1,2 \
        --workdir workdirs/unseen_sst2 --out workdirs/unseen_sst2/seeds.json

A second pool of 32 examples (``data.unseen_size``) that no training or validation run ever
draws from; the last 6 runs (``collect.unseen_runs`` = the 6 held-out test runs) draw their
subsets from the pool and the unseen pool together, so the simulators must score batches
holding examples they never saw (GPTfluence through their features; Simfluence has no
parameters for them). The protocol and base model of configs/finetune_sst2.py otherwise.

Not covered yet: test examples never seen by the simulator (Table 11's second and third
columns) need the simulate stage to hold test examples out of the fit; the pipeline has no
config key for that.
"""

from experiments.protocol import task_config


def get_config():
    c = task_config("sst2")
    c.data.unseen_size = 32
    c.collect.unseen_runs = 6
    return c
