"""Your own data: a tiny food-review sentiment task from JSON Lines files, CPU-sized.

    python -m gptjax.main --config configs/own_data_example.py

Run it from the repository root (the data paths below are relative to it). The files are in
tests/fixtures/own_data/: train.jsonl (40 reviews: the training and unseen pools), test.jsonl
(16 reviews: the test set), pretrain.jsonl (64 reviews of other dishes that teach a fresh
model the answer format; 4 of them are copies of training reviews, which preparation drops).
Every key is explained in docs/own_data.md, which walks through this run.
"""

from gptjax.pipeline.config import base_config

DATA = "tests/fixtures/own_data"


def get_config():
    c = base_config()
    c.seed = 0

    c.data.task = "jsonl"
    c.data.task_kwargs.path = f"{DATA}/train.jsonl"  # pools: one {"input", "target"} per line
    c.data.task_kwargs.test_path = f"{DATA}/test.jsonl"  # test set ("" / unset: from path)
    # Classification: every target is one of these; the loss is that of the label word.
    c.data.task_kwargs.label_words = (" negative", " positive")
    c.data.pool_size = 32  # training pool: ids 0..31
    c.data.unseen_size = 8  # unseen pool: ids 32..39 (40 = every row of train.jsonl)
    c.data.test_size = 16  # every row of test.jsonl
    c.data.max_len = 32

    c.model.source = "init"  # a fresh GPT-NeoX, as small as the task
    c.model.compact_vocab = True  # only the tokens the pool and test texts use
    c.model.hidden_size = 32
    c.model.num_layers = 2
    c.model.num_heads = 2
    c.model.intermediate_size = 128
    # Learn the answer format first, on a separate file of other examples.
    c.model.pretrain_task_kwargs.path = f"{DATA}/pretrain.jsonl"
    c.model.pretrain_examples = 64
    c.model.pretrain_batch_size = 16
    c.model.pretrain_steps = 100

    c.collect.num_runs = 16
    c.collect.subset_size = 16
    c.collect.batch_size = 4
    c.collect.epochs = 2  # 8 steps per run
    c.collect.learning_rate = 1e-3
    c.collect.runs_per_device = 8
    c.collect.save_params = "all"  # TracIn-CP reads the parameters of every step
    c.collect.split = "10,2,4"  # training, validation, held-out runs
    return c
