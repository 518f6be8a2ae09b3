r"""Mislabelled data: SST-2 with 40% of the training pool's labels flipped (the paper's §6).

    python -m experiments.mislabel --config configs/mislabel_sst2.py \
        --workdir workdirs/mislabel_sst2

runs the pipeline (collection, GPTfluence fit) on this config if the workdir is not finished,
then ranks the pool by GPTfluence self-influence, TracIn-CP self-influence (10 checkpoints of
the first training run) and at random (10 shuffles), and writes the fraction of flipped
labels found against the fraction checked (CSV + PNG) into ``<workdir>/results/``. The
pipeline alone:

    python -m gptjax.main --config configs/mislabel_sst2.py --workdir workdirs/mislabel_sst2

``data.label_noise`` = 0.4 flips exactly 40 of the 100 pool labels (recorded in
data/pools.json as ``flipped``); the test labels are clean. Parameters are saved at 10 evenly
spaced steps for TracIn. The protocol and base model of configs/finetune_sst2.py otherwise.
"""

from experiments.protocol import task_config


def get_config():
    c = task_config("sst2")
    c.data.label_noise = 0.4
    c.stages = "collect,simulate,report"
    c.simulator.models = "gptfluence"
    c.collect.save_params = "evenly:10"
    return c
