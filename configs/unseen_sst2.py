r"""Unseen data (the paper's Table 11), on SST-2: unseen training examples, unseen test
examples, or both. The variant is the config string after the file name (default train):

    python -m gptjax.pipeline.seeds --config configs/unseen_sst2.py:train --seeds 0,1,2 \
        --workdir workdirs/unseen_sst2 --out workdirs/unseen_sst2/seeds.json
    for v in test both; do
      python -m gptjax.pipeline.seeds --config configs/unseen_sst2.py:$v --seeds 0,1,2 \
          --workdir workdirs/unseen_sst2_$v --out workdirs/unseen_sst2_$v/seeds.json
    done

* ``train``: a second pool of 32 examples (``data.unseen_size``) that no training or
  validation run ever draws from; the last 6 runs (``collect.unseen_runs`` = the 6 held-out
  test runs) draw their subsets from the pool and the unseen pool together, so the
  simulators must score batches holding examples they never saw (GPTfluence through their
  features; Simfluence has no parameters for them).
* ``test``: the last 16 of the 48 test examples (``simulator.unseen_test``) are held out of
  every simulator's fit: their trajectories are never seen, GPTfluence predicts them from
  their features and first value. Their figures are a table of their own ("loss, unseen
  test examples"); Simfluence is not applicable there, and the mean trajectory becomes
  ``mean_trajectory_oracle`` (it averages those examples' training-run trajectories).
* ``both``: the two together.

The protocol and base model of configs/finetune_sst2.py otherwise.
"""

from experiments.protocol import task_config

UNSEEN_POOL = 32  # unseen training examples (data.unseen_size)
UNSEEN_TEST = 16  # test examples held out of the fit, of 48
# The config strings this file takes (``--config FILE:<variant>``); tests validate each.
VARIANTS = ("train", "test", "both")


def get_config(variant: str = "train"):
    if variant not in VARIANTS:
        raise ValueError(f"unseen-data variant {variant!r} is not one of {VARIANTS}")
    c = task_config("sst2")
    if variant in ("train", "both"):
        c.data.unseen_size = UNSEEN_POOL
        c.collect.unseen_runs = 6
    if variant in ("test", "both"):
        c.simulator.unseen_test = UNSEEN_TEST
    return c
