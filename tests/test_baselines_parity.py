"""TracIn scores by gptjax equal Captum's on the equivalent transformers model.

A tiny GPT-NeoX in gptjax, three checkpoints (perturbed copies) with their learning rates,
exported to transformers' PyTorch model; Captum's TracInCP (full gradients), its
self-influence, and TracInCPFast (final layer only) against ours.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from baselines.grads import GradConfig, GradientEngine
from baselines.tracin import self_influence, tracin_scores
from gptjax.models.config import pythia_style
from gptjax.models.transformer import init_model

torch = pytest.importorskip("torch")
pytest.importorskip("captum")
pytestmark = pytest.mark.parity

VOCAB = 61
LRS = [0.5, 0.3, 0.1]
REL_TOL = 1e-4


def token_batch(rng, m, length, targets, full_targets=False):
    ids = rng.integers(0, VOCAB, (m, length)).astype(np.int32)
    lens = rng.integers(targets + 2, length + 1, m)
    lens[0] = length
    mask = (np.arange(length)[None] < lens[:, None]).astype(np.int32)
    pos = np.stack([np.arange(n - targets - 1, n - 1) for n in lens]).astype(np.int32)
    tmask = np.ones((m, targets), np.float32)
    if not full_targets and targets > 1:
        tmask[1, 0] = 0.0  # a masked target token
    return dict(
        input_ids=ids,
        attention_mask=mask,
        target_pos=pos,
        target_ids=np.take_along_axis(ids, pos + 1, 1),
        target_mask=tmask,
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    from gptjax.models.hf_loading import save_hf_model
    from tests.reference.torch_tracin import target_module_class, torch_state_dict

    cfg = pythia_style(vocab_size=VOCAB, hidden_size=16, num_layers=2, num_heads=2)
    model = init_model(cfg, 0)
    graphdef, state = nnx.split(model)
    rng = np.random.default_rng(0)
    # Perturb every parameter (norm scales and biases too) so the checkpoints differ.
    states = [
        jax.tree.map(lambda x: x + 0.05 * rng.standard_normal(x.shape).astype(np.float32), state)
        for _ in range(3)
    ]
    path = tmp_path_factory.mktemp("tiny_neox")
    save_hf_model(nnx.merge(graphdef, states[0]), path)
    lm = AutoModelForCausalLM.from_pretrained(path).eval()
    torch_states = [torch_state_dict(nnx.merge(graphdef, s), lm) for s in states]
    target_lm = target_module_class()
    return dict(
        graphdef=graphdef,
        states=states,
        torch_states=torch_states,
        wrapper=target_lm(lm).eval(),
        single=target_lm(lm, single_target=True).eval(),
    )


def rel_err(ours, ref):
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def test_tracincp_matches_captum(setup):
    from tests.reference.torch_tracin import captum_self_influence, captum_tracincp

    rng = np.random.default_rng(1)
    train, test = token_batch(rng, 6, 12, 3), token_batch(rng, 4, 12, 3)
    ref = captum_tracincp(setup["wrapper"], setup["torch_states"], LRS, train, test, batch_size=4)
    for factorize in ("vocab", "none"):
        engine = GradientEngine(
            setup["graphdef"], setup["states"][0], GradConfig(factorize=factorize, chunk_size=4)
        )
        ours = tracin_scores(engine, setup["states"], LRS, train, test)
        assert ours.shape == ref.shape == (6, 4)
        err = rel_err(ours, ref)
        print(f"TracInCP factorize={factorize}: max rel err {err:.2e}")
        assert err <= REL_TOL
        np.testing.assert_allclose(ours, ref, rtol=REL_TOL, atol=REL_TOL * np.abs(ref).max())
    ref_self = captum_self_influence(
        setup["wrapper"], setup["torch_states"], LRS, train, batch_size=4
    )
    ours_self = self_influence(engine, setup["states"], LRS, train)
    print(f"self-influence: max rel err {rel_err(ours_self, ref_self):.2e}")
    assert rel_err(ours_self, ref_self) <= REL_TOL


def test_last_layer_matches_tracincp_fast(setup):
    from tests.reference.torch_tracin import captum_tracincp_fast

    rng = np.random.default_rng(2)
    train, test = token_batch(rng, 6, 10, 1, True), token_batch(rng, 5, 10, 1, True)
    ref = captum_tracincp_fast(setup["single"], setup["torch_states"], LRS, train, test)
    for factorize in ("vocab", "none"):
        engine = GradientEngine(
            setup["graphdef"],
            setup["states"][0],
            GradConfig(layers="last", factorize=factorize, chunk_size=4),
        )
        ours = tracin_scores(engine, setup["states"], LRS, train, test)
        assert ours.shape == ref.shape == (6, 5)
        err = rel_err(ours, ref)
        print(f"TracInCPFast factorize={factorize}: max rel err {err:.2e}")
        assert err <= REL_TOL
