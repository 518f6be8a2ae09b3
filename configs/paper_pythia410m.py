r"""Paper scale: Pythia-410M fine-tuned on SST-2, 32 runs x 96 steps x 200 test examples.

For an accelerator and a local Hugging Face checkpoint directory of Pythia-410M
(config.json + safetensors; nothing is downloaded). The directory comes from
``$GPTJAX_PYTHIA410M`` (default ``checkpoints/pythia-410m``) or ``--config.model.path``:

    GPTJAX_PYTHIA410M=/path/to/pythia-410m python -m gptjax.pipeline.seeds \
        --config configs/paper_pythia410m.py --seeds 0,1,2 \
        --workdir workdirs/paper_pythia410m --out workdirs/paper_pythia410m/seeds.json

The config string picks another task or the instruction mixture, e.g.
``--config configs/paper_pythia410m.py:mixture`` (with ``--workdir
workdirs/paper_pythia410m_mixture``). The paper's protocol: a pool of 200, subsets of 128,
batch 4, 3 epochs (T = 96), AdamW (0.9, 0.999), weight decay 0.001, lr 1e-5 decaying
linearly, no warm-up; 32 runs split 25 / 2 / 5; 200 test examples. Saving every step of a
410M model is out of reach (1.6 GB each), so parameters of the unembedding only
(``lm_head``) are saved, at 10 evenly spaced steps of the 5 test runs alone (10 GB; every
run's would be 66 GB), and the gradient baselines are the last-layer ones (TracIn-CP over
10 checkpoints, Grad-Dot), as the reference's Captum TracInCPFast did. Simulators: the
paper's GPTfluence and Simfluence, and the gradient-kernel ones (``gptfluence_kernel``,
``gradient_kernel``) with the base model's gradients projected to 8192 dimensions from their
per-token factors: the default kernel, exact gradients along the runs' mean path, would hold
1.6 GB per example. Memory (XLA's estimate, benchmarks.collect_memory): 8 runs per device on
SST-2 and WMT16, 4 on the tasks with inputs near 256 tokens, and decoding 40 test examples
at a time, so that a group fits an 80 GB card. Not run on the 2-CPU machine: it validates
there (tests/test_configs.py), and tests/test_paper_config.py runs it end to end on a tiny
checkpoint of the same layout.
"""

import os

from experiments.protocol import MODELS
from gptjax.pipeline.config import base_config

TASKS = ("sst2", "rte", "boolq", "webnlg", "wmt16_de_en", "mixture")
# The config strings this file takes (``--config FILE:<variant>``); tests validate each.
VARIANTS = TASKS


def get_config(task: str = "sst2"):
    if task not in TASKS:
        raise ValueError(f"task {task!r} is not one of {TASKS}")
    c = base_config()
    c.data.task = task
    c.data.format = "instruction" if task == "mixture" else "finetune"
    if task == "mixture":
        c.data.mixture_tasks = "sst2,rte,boolq,webnlg,wmt16_de_en"
    c.data.pool_size = 200
    c.data.test_size = 200
    c.data.max_len = 256
    c.model.source = "hf"
    c.model.path = os.environ.get("GPTJAX_PYTHIA410M", "checkpoints/pythia-410m")
    c.collect.num_runs = 32
    c.collect.subset_size = 128
    c.collect.batch_size = 4
    c.collect.epochs = 3
    c.collect.learning_rate = 1e-5
    # Runs vmapped per device. XLA's estimate of one group's memory (benchmarks.collect_memory:
    # params, AdamW moments, activations): with 8 runs 47 GiB on SST-2 and 51 GiB on WMT16,
    # but 69-80 GiB on the tasks with inputs near 256 tokens, which is over an 80 GB card's.
    # Those take 4 runs (34-40 GiB). On an H200, --config.collect.runs_per_device=8 fits all.
    c.collect.runs_per_device = 8 if task in ("sst2", "wmt16_de_en") else 4
    c.collect.save_params = "evenly:10"
    c.collect.save_params_regex = "lm_head"
    # The unembedding is 206 MB in float32: 10 saves of every run would take 66 GB, nearly all
    # of a 64 GiB accelerator machine's disk. The gradient baselines read only the test runs'
    # (10 GB), and the base model's kernel below needs no saves.
    c.collect.save_params_runs = "test"
    c.collect.split = "25,2,5"
    if task in ("webnlg", "wmt16_de_en", "mixture"):
        c.collect.generation_every = 8
        c.collect.max_new_tokens = 48
        # Decode 40 test examples at a time: all 200 at once would hold a KV cache of 80-216
        # GiB per group (benchmarks.collect_memory), beyond any single accelerator here.
        c.collect.generation_chunk = 40
    c.baselines.methods = "persistence,mean_trajectory,tracin_cp_k_last_layer,grad_dot_last_layer"
    c.simulator.models = MODELS
    # The projected kernel of the base model (the first version; docs/simulator.md): the
    # saves hold only the unembedding, and exact full gradients of 410M parameters do not fit.
    c.simulator.kernel_checkpoints = 1
    c.simulator.kernel_precondition = "none"
    # Project every dense layer's gradient from its per-token factors, not from the explicit
    # gradient: the same kernel, 6x less work per example at this size on a CPU
    # (docs/benchmarks.md, benchmarks.kernel_paper_scale).
    c.baselines.factorize = "all"
    c.baselines.num_checkpoints = 10
    return c
