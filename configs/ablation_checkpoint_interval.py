r"""Ablation: checkpoint interval m = 1, 2, 5, 10 (the paper's Figure 5), on SST-2.

GPTfluence learns from trajectories observed only at steps 0, m, 2m, ... (FitConfig
``observe_every``; scored on every step of the held-out runs). The variant is the config
string after the file name (default 1), one workdir per interval:

    for m in 1 2 5 10; do
      python -m gptjax.pipeline.seeds --config configs/ablation_checkpoint_interval.py:$m \
          --seeds 0,1,2 --workdir workdirs/ablation_checkpoint_interval/every_$m \
          --out workdirs/ablation_checkpoint_interval/every_$m/seeds.json
    done

The protocol and base model of configs/finetune_sst2.py (experiments/protocol.py: a fresh
Pythia-architecture model, d_model 64, 2 layers, pretrained on SST-2 rows kept apart from the
pools; 32 runs of 24 steps); only GPTfluence is fitted, beside the persistence and
mean-trajectory baselines; no parameters are saved.
"""

from experiments.protocol import task_config

INTERVALS = (1, 2, 5, 10)
# The config strings this file takes (``--config FILE:<variant>``); tests validate each.
VARIANTS = tuple(str(m) for m in INTERVALS)


def get_config(interval: str = "1"):
    m = int(interval)
    if m not in INTERVALS:
        raise ValueError(f"checkpoint interval {m} is not one of the ablation's {INTERVALS}")
    c = task_config("sst2")
    c.simulator.models = "gptfluence"
    c.simulator.gptfluence.observe_every = m
    c.collect.save_params = "none"
    c.baselines.methods = "persistence,mean_trajectory"
    return c
