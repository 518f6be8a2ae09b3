"""Logits, loss and gradients of our Flax models equal transformers' PyTorch models."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gptjax.models.hf_loading import ALIASES, iter_hf_tensors, load_hf_model
from gptjax.models.losses import per_example_loss
from tests.reference.hf_models import LLAMA_CONFIGS, NEOX_CONFIGS, make_hf_model

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.parity

ALL = list(NEOX_CONFIGS) + list(LLAMA_CONFIGS)


def _batch(seed: int = 0, b: int = 3, length: int = 12):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 97, size=(b, length)).astype(np.int32)
    lengths = np.array([length, length - 3, length - 5])[:b]
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
    return ids, mask, lengths


@pytest.mark.parametrize("name", ALL)
def test_logits_match_transformers(name, tmp_path):
    ref = make_hf_model(name, tmp_path)
    model = load_hf_model(tmp_path)
    ids, mask, lengths = _batch()
    with torch.no_grad():
        ref_logits = ref(
            input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask)
        ).logits.numpy()
    hidden, _ = model(jnp.asarray(ids), attention_mask=jnp.asarray(mask))
    logits = np.asarray(model.unembed(hidden))
    for i, n in enumerate(lengths):  # padded positions are undefined in both: compare real ones
        np.testing.assert_allclose(logits[i, :n], ref_logits[i, :n], atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "name", ["neox_rot25_parallel", "neox_rot100_sequential", "llama_gqa_tied"]
)
def test_loss_and_gradients_match_transformers(name, tmp_path):
    ref = make_hf_model(name, tmp_path)
    model = load_hf_model(tmp_path)
    ids, mask, lengths = _batch(seed=1)
    # Targets: the last 4 real tokens of each sequence.
    s = 4
    target_pos = np.stack([np.arange(n - s - 1, n - 1) for n in lengths]).astype(np.int32)
    target_ids = np.take_along_axis(ids, target_pos + 1, axis=1)
    target_mask = np.ones_like(target_ids, dtype=np.float32)

    def loss_fn(m):
        return per_example_loss(
            m,
            jnp.asarray(ids),
            jnp.asarray(mask),
            jnp.asarray(target_pos),
            jnp.asarray(target_ids),
            jnp.asarray(target_mask),
        ).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)

    labels = np.full(ids.shape, -100, dtype=np.int64)
    for i in range(len(ids)):
        labels[i, target_pos[i] + 1] = target_ids[i]
    ref.zero_grad()
    logits = ref(
        input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask)
    ).logits
    per_tok = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]),
        torch.tensor(labels[:, 1:]).reshape(-1),
        reduction="none",
        ignore_index=-100,
    ).reshape(len(ids), -1)
    ref_loss = (per_tok.sum(1) / s).mean()
    ref_loss.backward()
    np.testing.assert_allclose(float(loss), ref_loss.item(), rtol=1e-4)

    # Map our gradients through the same name mapping as the weights, then compare per tensor.
    grad_model = nnx.merge(nnx.graphdef(model), grads)
    ref_grads = {n: p.grad.numpy() for n, p in ref.named_parameters() if p.grad is not None}
    seen = 0
    for hf_name, g in iter_hf_tensors(grad_model):
        r = ref_grads[hf_name] if hf_name in ref_grads else ref_grads[ALIASES[hf_name]]
        scale = np.abs(r).max()
        assert np.abs(g - r).max() <= 1e-4 * max(scale, 1e-6), hf_name
        seen += 1
    assert seen >= 10


def test_export_round_trip(tmp_path):
    make_hf_model("neox_rot25_parallel", tmp_path)
    model = load_hf_model(tmp_path)
    from safetensors.numpy import load_file

    saved = load_file(tmp_path / "model.safetensors")
    for name, value in iter_hf_tensors(model):
        np.testing.assert_array_equal(value, saved[name])
    jax.clear_caches()


@pytest.mark.parametrize("arch", ["gpt_neox", "llama"])
def test_saved_model_loads_in_transformers(arch, tmp_path):
    from transformers import AutoModelForCausalLM

    from gptjax.models.config import ModelConfig
    from gptjax.models.hf_loading import save_hf_model
    from gptjax.models.transformer import init_model

    extra = dict(parallel_residual=True, rotary_pct=0.25, attention_bias=True, mlp_bias=True)
    if arch == "llama":
        extra = dict(num_kv_heads=2, tie_embeddings=True)
    cfg = ModelConfig(
        arch=arch,
        vocab_size=97,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        intermediate_size=64,
        **extra,
    )
    model = init_model(cfg, seed=3)
    save_hf_model(model, tmp_path)
    ref = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids, mask, _ = _batch(seed=2)
    with torch.no_grad():
        ref_logits = ref(input_ids=torch.tensor(ids, dtype=torch.long)).logits.numpy()
    hidden, _ = model(jnp.asarray(ids))
    np.testing.assert_allclose(np.asarray(model.unembed(hidden)), ref_logits, atol=1e-4, rtol=0)
