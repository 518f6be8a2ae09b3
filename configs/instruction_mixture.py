r"""Instruction tuning on the mixture of the five paper tasks (FLAN-style templates).

The CPU protocol of issue #14.
Three seeds, every stage (one workdir per seed, each with its report page
``results/report.md``); ``python -m experiments.report`` then renders EXPERIMENTS.md:

    python -m gptjax.pipeline.seeds --config configs/instruction_mixture.py --seeds 0,1,2 \
        --workdir workdirs/instruction_mixture --out workdirs/instruction_mixture/seeds.json

One seed only:

    python -m gptjax.main --config configs/instruction_mixture.py \
        --workdir workdirs/instruction_mixture/seed_0

Base model: a fresh Pythia-architecture (GPT-NeoX) model, d_model 64, 2 layers, 4 heads, MLP
256, on a compact Pythia vocabulary, pretrained 300 steps (batch 16, lr 3e-3) on other
examples of the five tasks kept apart from the pools (drawn with seed + 1; any example
sharing a text with a pool, unseen or test example is dropped). 32 runs of 24 steps (subsets
of 32 from a pool of 100, batch 4, 3 epochs, AdamW lr 1e-3, linear decay), 50 test examples,
split 24 / 2 / 6, parameters saved at every step for TracIn-CP (all steps and 10
checkpoints). See experiments/protocol.py. Greedy generations every 6 steps (steps 0, 6, 12,
18, 24) give per-example BLEU and ROUGE-L trajectories, simulated beside the loss (TracIn-CP
and Grad-Dot apply to the loss only): the generation tasks' examples scored against their
references, the classification tasks' against their target word (the answer they are
trained to give). The pool and the test set are split evenly over sst2, rte, boolq, webnlg
and wmt16_de_en.
"""

from experiments.protocol import task_config


def get_config():
    return task_config("mixture")
