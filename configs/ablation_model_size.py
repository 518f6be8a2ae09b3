r"""Ablation: the model-size ladder (the paper's Figure 3 varies Pythia 14M..2.8B), on SST-2.

Fresh Pythia-architecture models on the compact vocabulary, each pretrained the same way on
SST-2 rows kept apart from the pools (experiments/protocol.py ``SIZES``):

    d32   d_model 32,  1 layer,  2 heads, MLP 128
    d64   d_model 64,  2 layers, 4 heads, MLP 256   (the base model of every CPU config)
    d128  d_model 128, 2 layers, 4 heads, MLP 512
    d256  d_model 256, 4 layers, 8 heads, MLP 1024

The variant is the config string after the file name (default d64), one workdir each:

    for s in d32 d64 d128 d256; do
      python -m gptjax.pipeline.seeds --config configs/ablation_model_size.py:$s \
          --seeds 0,1,2 --workdir workdirs/ablation_model_size/$s \
          --out workdirs/ablation_model_size/$s/seeds.json
    done

Every method of configs/finetune_sst2.py (GPTfluence, Simfluence, TracIn-CP, Grad-Dot and
the two sanity baselines), with its protocol: 32 runs of 24 steps, split 24 / 2 / 6.
"""

from experiments.protocol import SIZES, task_config

# The config strings this file takes (``--config FILE:<variant>``); tests validate each.
VARIANTS = tuple(SIZES)


def get_config(size: str = "d64"):
    if size not in SIZES:
        raise ValueError(f"model size {size!r} is not one of the ladder's {tuple(SIZES)}")
    return task_config("sst2", size)
