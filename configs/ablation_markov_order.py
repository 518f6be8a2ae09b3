r"""Ablation: GPTfluence's Markov order n = 1, 2, 3, 5, 10 (the paper's Figure 4), on SST-2.

The variant is the config string after the file name (default 1); each order gets its own
workdir (collection included: the runs are the same for every order, the fit is not):

    for n in 1 2 3 5 10; do
      python -m gptjax.pipeline.seeds --config configs/ablation_markov_order.py:$n \
          --seeds 0,1,2 --workdir workdirs/ablation_markov_order/order_$n \
          --out workdirs/ablation_markov_order/order_$n/seeds.json
    done

The protocol and base model of configs/finetune_sst2.py (experiments/protocol.py: a fresh
Pythia-architecture model, d_model 64, 2 layers, pretrained on SST-2 rows kept apart from the
pools; 32 runs of 24 steps); only GPTfluence is fitted (``simulator.models``), beside the
persistence and mean-trajectory baselines; no parameters are saved.
"""

from experiments.protocol import task_config

ORDERS = (1, 2, 3, 5, 10)
# The config strings this file takes (``--config FILE:<variant>``); tests validate each.
VARIANTS = tuple(str(n) for n in ORDERS)


def get_config(order: str = "1"):
    n = int(order)
    if n not in ORDERS:
        raise ValueError(f"Markov order {n} is not one of the ablation's {ORDERS}")
    c = task_config("sst2")
    c.stages = "collect,simulate,baselines,report"
    c.simulator.models = "gptfluence"
    c.simulator.gptfluence.order = n
    c.collect.save_params = "none"
    c.baselines.methods = "persistence,mean_trajectory"
    return c
