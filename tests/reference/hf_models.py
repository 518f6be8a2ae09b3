"""Build tiny random transformers (PyTorch) models and save them as HF directories."""

from __future__ import annotations

from pathlib import Path

NEOX_CONFIGS = {
    "neox_rot25_parallel": dict(rotary_pct=0.25, use_parallel_residual=True),
    "neox_rot100_sequential": dict(rotary_pct=1.0, use_parallel_residual=False),
    "neox_rot50_tied": dict(rotary_pct=0.5, use_parallel_residual=True, tie_word_embeddings=True),
}
LLAMA_CONFIGS = {
    "llama_gqa_tied": dict(num_key_value_heads=2, tie_word_embeddings=True),
    "llama_mha_untied": dict(num_key_value_heads=4, tie_word_embeddings=False),
    "llama_gqa_bias": dict(num_key_value_heads=1, attention_bias=True, mlp_bias=True),
}


def make_hf_model(name: str, out_dir: Path, seed: int = 0):
    """A random torch model for one of the named configs, saved as safetensors to out_dir."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    common = dict(
        vocab_size=97,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    if name in NEOX_CONFIGS:
        opts = dict(NEOX_CONFIGS[name])
        pct = opts.pop("rotary_pct")
        cfg = GPTNeoXConfig(
            **common,
            **opts,
            rope_parameters={
                "rope_theta": 10000.0,
                "partial_rotary_factor": pct,
                "rope_type": "default",
            },
        )
        model = GPTNeoXForCausalLM(cfg)
    else:
        cfg = LlamaConfig(
            **common,
            **LLAMA_CONFIGS[name],
            rope_parameters={"rope_theta": 500.0, "rope_type": "default"},
        )
        model = LlamaForCausalLM(cfg)
    # Random init is std 0.02; perturb norms and biases so they are not trivially 1 / 0.
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname or pname.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    model.eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    return model
