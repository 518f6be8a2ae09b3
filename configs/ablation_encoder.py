r"""Ablation: where GPTfluence's example features come from (the paper's Table 9), on SST-2:
frozen MiniLM mean-pooled, MiniLM [CLS], or the base GPT model's own hidden states.

The variant is the config string after the file name (default mean), one workdir each:

    for v in mean cls gpt; do
      python -m gptjax.pipeline.seeds --config configs/ablation_encoder.py:$v \
          --seeds 0,1,2 --workdir workdirs/ablation_encoder/$v \
          --out workdirs/ablation_encoder/$v/seeds.json
    done

``gpt`` sets ``simulator.encoder = "gpt"``: the features are the mean over real tokens of the
base model's final-norm hidden states (d_model 64 here, not MiniLM's 384) over each example's
own token row (prompt and target), the model every run starts from.

The protocol and base model of configs/finetune_sst2.py (experiments/protocol.py: a fresh
Pythia-architecture model, d_model 64, 2 layers, pretrained on SST-2 rows kept apart from the
pools; 32 runs of 24 steps); GPTfluence only, beside the persistence and mean-trajectory
baselines; no parameters are saved.
"""

from experiments.protocol import task_config

# variant: (simulator.encoder, simulator.pooling)
ENCODERS = {"mean": ("minilm", "mean"), "cls": ("minilm", "cls"), "gpt": ("gpt", "mean")}
# The config strings this file takes (``--config FILE:<variant>``); tests validate each.
VARIANTS = tuple(ENCODERS)


def get_config(variant: str = "mean"):
    if variant not in ENCODERS:
        raise ValueError(f"encoder {variant!r} is not one of the ablation's {VARIANTS}")
    c = task_config("sst2")
    c.simulator.models = "gptfluence"
    c.simulator.encoder, c.simulator.pooling = ENCODERS[variant]
    c.collect.save_params = "none"
    c.baselines.methods = "persistence,mean_trajectory"
    return c
