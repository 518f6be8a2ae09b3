r"""Fine-tuning on RTE (entailment; label words no / yes).

The CPU protocol of issue #14.
Three seeds, every stage (one workdir per seed, each with its report page
``results/report.md``); ``python -m experiments.report`` then renders EXPERIMENTS.md:

    python -m gptjax.pipeline.seeds --config configs/finetune_rte.py --seeds 0,1,2 \
        --workdir workdirs/finetune_rte --out workdirs/finetune_rte/seeds.json

One seed only:

    python -m gptjax.main --config configs/finetune_rte.py \
        --workdir workdirs/finetune_rte/seed_0

Base model: a fresh Pythia-architecture (GPT-NeoX) model, d_model 64, 2 layers, 4 heads, MLP
256, on a compact Pythia vocabulary, pretrained 300 steps (batch 16, lr 3e-3) on other RTE
training rows kept apart from the pools (drawn with seed + 1; any example sharing a text
with a pool, unseen or test example is dropped). 32 runs of 24 steps (subsets of 32 from a
pool of 100, batch 4, 3 epochs, AdamW lr 1e-3, linear decay), 48 test examples, split 24 / 2
/ 6, parameters saved at every step for TracIn-CP (all steps and 10 checkpoints). See
experiments/protocol.py.
"""

from experiments.protocol import task_config


def get_config():
    return task_config("rte")
