"""Hugging Face checkpoints (config.json + safetensors, single or sharded) <-> gptjax params.

No torch at run time: tensors are read with `safetensors` into numpy. The mapping between
HF tensor names and our parameter paths is one table per architecture, used in both
directions (load, and export for the parity tests against transformers).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from flax import nnx

from gptjax.models.config import ModelConfig, load_hf_config
from gptjax.models.transformer import Transformer
from gptjax.models.weight_mapping import (
    Mapping,
    build_from_mapping,
    concat,
    concat_transpose,
    identity,
    transpose,
)

# Names one tensor has in different HF releases (transformers 5 calls Pythia's embed_out lm_head
# in memory but keeps embed_out on disk).
ALIASES = {"embed_out.weight": "lm_head.weight", "lm_head.weight": "embed_out.weight"}


def _neox_qkv_kernel(cfg: ModelConfig) -> Callable[[np.ndarray], np.ndarray]:
    h, hd = cfg.num_heads, cfg.dim_per_head

    def convert(w: np.ndarray) -> np.ndarray:
        # HF fuses per head: rows are [head0: q k v, head1: q k v, ...]; we want [Q | K | V].
        w = w.reshape(h, 3, hd, -1).transpose(1, 0, 2, 3).reshape(3 * h * hd, -1)
        return transpose(w)

    return convert


def _neox_qkv_bias(cfg: ModelConfig) -> Callable[[np.ndarray], np.ndarray]:
    h, hd = cfg.num_heads, cfg.dim_per_head
    return lambda b: b.reshape(h, 3, hd).transpose(1, 0, 2).reshape(-1)


def param_mapping(cfg: ModelConfig) -> Mapping:
    m: Mapping = {}
    if cfg.arch == "gpt_neox":
        p = "gpt_neox."
        m[("embed", "embedding")] = ((p + "embed_in.weight",), identity)
        for i in range(cfg.num_layers):
            hf = f"{p}layers.{i}."
            ours = ("layers", i)
            m[(*ours, "attn_norm", "scale")] = ((hf + "input_layernorm.weight",), identity)
            m[(*ours, "attn_norm", "bias")] = ((hf + "input_layernorm.bias",), identity)
            m[(*ours, "mlp_norm", "scale")] = ((hf + "post_attention_layernorm.weight",), identity)
            m[(*ours, "mlp_norm", "bias")] = ((hf + "post_attention_layernorm.bias",), identity)
            m[(*ours, "attn", "qkv", "kernel")] = (
                (hf + "attention.query_key_value.weight",),
                _neox_qkv_kernel(cfg),
            )
            m[(*ours, "attn", "out", "kernel")] = ((hf + "attention.dense.weight",), transpose)
            if cfg.attention_bias:
                m[(*ours, "attn", "qkv", "bias")] = (
                    (hf + "attention.query_key_value.bias",),
                    _neox_qkv_bias(cfg),
                )
                m[(*ours, "attn", "out", "bias")] = ((hf + "attention.dense.bias",), identity)
            m[(*ours, "mlp", "up", "kernel")] = ((hf + "mlp.dense_h_to_4h.weight",), transpose)
            m[(*ours, "mlp", "up", "bias")] = ((hf + "mlp.dense_h_to_4h.bias",), identity)
            m[(*ours, "mlp", "down", "kernel")] = ((hf + "mlp.dense_4h_to_h.weight",), transpose)
            m[(*ours, "mlp", "down", "bias")] = ((hf + "mlp.dense_4h_to_h.bias",), identity)
        m[("final_norm", "scale")] = ((p + "final_layer_norm.weight",), identity)
        m[("final_norm", "bias")] = ((p + "final_layer_norm.bias",), identity)
        if not cfg.tie_embeddings:
            m[("lm_head", "kernel")] = (("embed_out.weight",), transpose)
        return m
    p = "model."
    m[("embed", "embedding")] = ((p + "embed_tokens.weight",), identity)
    for i in range(cfg.num_layers):
        hf = f"{p}layers.{i}."
        ours = ("layers", i)
        a = hf + "self_attn."
        m[(*ours, "attn_norm", "scale")] = ((hf + "input_layernorm.weight",), identity)
        m[(*ours, "mlp_norm", "scale")] = ((hf + "post_attention_layernorm.weight",), identity)
        m[(*ours, "attn", "qkv", "kernel")] = (
            (a + "q_proj.weight", a + "k_proj.weight", a + "v_proj.weight"),
            concat_transpose,
        )
        m[(*ours, "attn", "out", "kernel")] = ((a + "o_proj.weight",), transpose)
        if cfg.attention_bias:
            m[(*ours, "attn", "qkv", "bias")] = (
                (a + "q_proj.bias", a + "k_proj.bias", a + "v_proj.bias"),
                concat,
            )
            m[(*ours, "attn", "out", "bias")] = ((a + "o_proj.bias",), identity)
        m[(*ours, "mlp", "up", "kernel")] = (
            (hf + "mlp.gate_proj.weight", hf + "mlp.up_proj.weight"),
            concat_transpose,
        )
        m[(*ours, "mlp", "down", "kernel")] = ((hf + "mlp.down_proj.weight",), transpose)
        if cfg.mlp_bias:
            m[(*ours, "mlp", "up", "bias")] = (
                (hf + "mlp.gate_proj.bias", hf + "mlp.up_proj.bias"),
                concat,
            )
            m[(*ours, "mlp", "down", "bias")] = ((hf + "mlp.down_proj.bias",), identity)
    m[("final_norm", "scale")] = ((p + "norm.weight",), identity)
    if not cfg.tie_embeddings:
        m[("lm_head", "kernel")] = (("lm_head.weight",), transpose)
    return m


def build_model(cfg: ModelConfig, get_tensor: Callable[[str], np.ndarray], source: str):
    """Our model filled from HF tensors (by name), every shape checked."""
    return build_from_mapping(cfg, get_tensor, source, param_mapping(cfg))


class _SafetensorsReader:
    """Reads tensors by name from one safetensors file or a sharded index, lazily."""

    def __init__(self, model_dir: Path):
        from safetensors import safe_open

        self._open = safe_open
        single = model_dir / "model.safetensors"
        index = model_dir / "model.safetensors.index.json"
        if single.is_file():
            self.files = [single]
            self.where: dict[str, Path] = {}
            self._handles = {}
            for name in self._keys(single):
                self.where[name] = single
        elif index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as err:
                raise ValueError(f"{index}: malformed sharded index ({err})") from err
            self.where = {name: model_dir / shard for name, shard in weight_map.items()}
            self._handles = {}
            for shard in set(self.where.values()):
                if not shard.is_file():
                    raise FileNotFoundError(f"{index} names shard {shard}, which does not exist")
        else:
            raise FileNotFoundError(
                f"no weights in {model_dir}: expected model.safetensors or "
                "model.safetensors.index.json (pytorch_model.bin is not read: no torch at run time)"
            )

    def _handle(self, file: Path):
        if file not in self._handles:
            try:
                self._handles[file] = self._open(str(file), framework="numpy")
            except Exception as err:
                raise ValueError(f"{file}: not a readable safetensors file ({err})") from err
        return self._handles[file]

    def _keys(self, file: Path) -> list[str]:
        return list(self._handle(file).keys())

    def __call__(self, name: str) -> np.ndarray:
        if name not in self.where and ALIASES.get(name) in self.where:
            name = ALIASES[name]
        if name not in self.where:
            raise ValueError(f"tensor {name!r} is missing from the checkpoint")
        file = self.where[name]
        try:
            return self._handle(file).get_tensor(name)
        except TypeError:
            # bfloat16 has no numpy dtype; go through jax, which has it.
            from safetensors import safe_open

            with safe_open(str(file), framework="flax") as f:
                return np.asarray(f.get_tensor(name), dtype=np.float32)


def load_hf_model(model_dir: str | os.PathLike) -> Transformer:
    """Load a GPTNeoX / Llama model from a local Hugging Face directory."""
    model_dir = Path(model_dir).expanduser()
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory not found: {model_dir}")
    cfg = load_hf_config(model_dir)
    reader = _SafetensorsReader(model_dir)
    return build_model(cfg, reader, source=str(model_dir))


def iter_hf_tensors(model: Transformer) -> Iterator[tuple[str, np.ndarray]]:
    """Our params as HF-named tensors (inverse of param_mapping), for exporting to transformers."""
    cfg = model.config
    flat = dict(nnx.state(model, nnx.Param).flat_state())
    h, kv, hd = cfg.num_heads, cfg.kv_heads, cfg.dim_per_head
    for path, (names, convert) in param_mapping(cfg).items():
        value = np.asarray(flat[path].value)
        if convert is identity:
            parts = [value]
        elif convert is transpose:
            parts = [value.T]
        elif convert in (concat_transpose, concat):
            value = value.T if convert is concat_transpose else value
            if len(names) == 3:  # q, k, v
                sizes = [h * hd, kv * hd, kv * hd]
            else:  # gate, up
                sizes = [cfg.intermediate_size] * 2
            parts = np.split(value, np.cumsum(sizes)[:-1], axis=0)
        elif path[-1] == "kernel":  # neox fused qkv kernel
            parts = [value.T.reshape(3, h, hd, -1).transpose(1, 0, 2, 3).reshape(3 * h * hd, -1)]
        else:  # neox fused qkv bias
            parts = [value.reshape(3, h, hd).transpose(1, 0, 2).reshape(-1)]
        for name, part in zip(names, parts, strict=True):
            yield name, np.ascontiguousarray(part)


def save_hf_model(model: Transformer, model_dir: str | os.PathLike) -> Path:
    """Write config.json + model.safetensors that transformers (and load_hf_model) can read."""
    from safetensors.numpy import save_file

    from gptjax.models.config import to_hf_config

    model_dir = Path(model_dir).expanduser()
    model_dir.mkdir(parents=True, exist_ok=True)
    tensors = dict(iter_hf_tensors(model))
    save_file(tensors, str(model_dir / "model.safetensors"), metadata={"format": "pt"})
    (model_dir / "config.json").write_text(json.dumps(to_hf_config(model.config), indent=2))
    return model_dir
