r"""Ablation: the frozen encoder's pooling, MiniLM mean vs [CLS] (the paper's Table 9), on SST-2.

The variant is the config string after the file name (default mean), one workdir each:

    for p in mean cls; do
      python -m gptjax.pipeline.seeds --config configs/ablation_encoder.py:$p \
          --seeds 0,1,2 --workdir workdirs/ablation_encoder/$p \
          --out workdirs/ablation_encoder/$p/seeds.json
    done

The third encoder of the issue, the GPT's own hidden states, has no config key yet
(``simulator.pool_hidden_states`` exists in the library; the pipeline's ``simulator.pooling``
chooses only MiniLM's mean / cls / pooler): not part of this ablation until it has one.

The protocol and base model of configs/finetune_sst2.py (experiments/protocol.py: a fresh
Pythia-architecture model, d_model 64, 2 layers, pretrained on SST-2 rows kept apart from the
pools; 32 runs of 24 steps); GPTfluence only, beside the persistence and mean-trajectory
baselines; no parameters are saved.
"""

from experiments.protocol import task_config

POOLINGS = ("mean", "cls")
# The config strings this file takes (``--config FILE:<variant>``); tests validate each.
VARIANTS = POOLINGS


def get_config(pooling: str = "mean"):
    if pooling not in POOLINGS:
        raise ValueError(f"pooling {pooling!r} is not one of the ablation's {POOLINGS}")
    c = task_config("sst2")
    c.simulator.models = "gptfluence"
    c.simulator.pooling = pooling
    c.collect.save_params = "none"
    c.baselines.methods = "persistence,mean_trajectory"
    return c
